// The imports panel: upload a products CSV, follow the job's progress to the end, and show
// the line-numbered report of refused rows. The upload streams the file as the request
// body (text/csv); progress is read from GET /v1/jobs/{id}, polled with a growing interval.
import { cell } from "./api.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled", "aborted"]);
const $ = (id) => document.getElementById(id);

function say(text) {
  $("import-status").textContent = text;
}

/** The job's progress message is the import summary as JSON (imports/service.py). */
function summary(job) {
  try {
    const parsed = JSON.parse(job.progress?.message ?? "");
    return parsed && typeof parsed === "object" ? parsed : null;
  } catch {
    return null;
  }
}

function describe(job, facts) {
  if (!facts) return job.progress?.message ? `${job.status}: ${job.progress.message}` : job.status;
  const parts = [`${facts.lines} lines read`, `${facts.imported} imported`];
  if (facts.created) parts.push(`${facts.created} new`);
  if (facts.updated) parts.push(`${facts.updated} updated`);
  if (facts.stock_changed) parts.push(`${facts.stock_changed} stock levels set`);
  parts.push(`${facts.bad} refused`);
  return `${job.status}: ${parts.join(", ")}`;
}

function report(facts) {
  const errors = facts?.errors ?? [];
  $("import-report").hidden = errors.length === 0;
  $("import-errors").tBodies[0].replaceChildren(
    ...errors.map((e) => {
      const tr = document.createElement("tr");
      tr.append(
        cell(String(e.line), { label: "Line", className: "num" }),
        cell(e.error, { label: "Error" }),
      );
      return tr;
    }),
  );
}

function show(job) {
  const bar = $("import-progress");
  const progress = job.progress;
  const facts = summary(job);
  bar.hidden = false;
  if (progress && progress.total) {
    bar.max = progress.total;
    bar.value = progress.done;
  } else if (job.status === "succeeded") {
    bar.max = 1;
    bar.value = 1;
  } else {
    bar.removeAttribute("value"); // indeterminate while the total is unknown
  }
  bar.textContent = `${Math.round((100 * bar.value) / bar.max)}%`;
  say(describe(job, facts));
  report(facts);
}

async function follow(jobId) {
  let delayMs = 300;
  for (;;) {
    const response = await fetch(`/v1/jobs/${jobId}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      say(`Cannot read the import job (${response.status})`);
      return;
    }
    const job = await response.json();
    show(job);
    if (FINISHED.has(job.status)) return;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 1.5, 3000);
  }
}

/** `csrfToken` returns the current session's CSRF token (set at sign-in). */
export function setupImports(csrfToken) {
  $("import-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("import-file").files[0];
    if (!file) return;
    $("import-progress").hidden = true;
    $("import-report").hidden = true;
    say("Uploading…");
    const response = await fetch("/v1/imports", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "text/csv",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken() ?? "",
      },
      body: file,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      say(problem.detail ?? `Upload refused (${response.status})`);
      return;
    }
    const job = await response.json();
    $("import-job").textContent = String(job.id);
    await follow(job.id);
  });
}
