// Same-origin API calls with the session cookie: CSRF token on unsafe methods, an
// Idempotency-Key on writes that take one, problem+json turned into a readable message.

let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail ?? problem.title ?? `Request failed (${status})`);
    this.status = status;
    this.problem = problem;
  }
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** fetch() for the API; returns the Response (ok or not). */
export async function request(path, { method = "GET", body, headers = {}, idempotent = false } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (method !== "GET" && csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
  if (idempotent) init.headers["Idempotency-Key"] = newKey();
  return fetch(path, init);
}

/** The JSON body of a successful call; an ApiError (with the problem) otherwise. */
export async function json(path, options) {
  const response = await request(path, options);
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new ApiError(response.status, problem);
  }
  return { body: response.status === 204 ? null : await response.json(), response };
}

/** A problem's field errors, when it has any, as one line. */
export function explain(error) {
  const errors = error.problem?.errors;
  if (Array.isArray(errors) && errors.length) {
    return errors.map((e) => `${String(e.field ?? "").replace(/^body\./, "")}: ${e.message}`).join("; ");
  }
  return error.message;
}

export function money(minor, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

export function cell(text, { label, className } = {}) {
  const td = document.createElement("td");
  td.textContent = text;
  if (label) td.dataset.label = label;
  if (className) td.className = className;
  return td;
}

export function button(text, onClick, attrs = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  for (const [key, value] of Object.entries(attrs)) b.setAttribute(key, value);
  b.addEventListener("click", onClick);
  return b;
}

let toastTimer = null;
export function toast(text, { error = false } = {}) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.toggle("error", error);
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 4000);
}
