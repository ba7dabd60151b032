// The dashboard: sign-in, a live stock table, an order feed and an ops panel.
// Plain ES module, no build step; every request is same-origin with the session cookie.
import { setupImports } from "./imports.js";
import { LiveStream } from "./live.js";

const STOCK_EVENT = "stock.changed";
const ORDER_EVENTS = ["reserved", "confirmed", "cancelled", "fulfilled", "expired"].map(
  (status) => `order.${status}`,
);
const MAX_FEED_ITEMS = 50;
const MAX_SNAPSHOT_PAGES = 20;
const OPS_REFRESH_MS = 5000;
const STATE_LABELS = {
  idle: "signed out",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  polling: "polling (fallback)",
};

const $ = (id) => document.getElementById(id);
const levels = new Map(); // stock level id -> { row, version }
let csrfToken = null;
let live = null;
let opsTimer = null;

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (method !== "GET" && csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
  return fetch(path, init);
}

function showState(name) {
  $("connection").dataset.state = name;
  $("connection-state").textContent = STATE_LABELS[name] ?? name;
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function cell(text, field) {
  const td = document.createElement("td");
  td.textContent = text;
  if (field) {
    td.dataset.field = field;
    td.className = "num";
  }
  return td;
}

/** Inserts or updates one level; an older version than the one shown is ignored. */
function applyLevel(level) {
  const known = levels.get(level.id);
  if (known && known.version > level.version) return;
  let row = known?.row;
  if (!row) {
    row = document.createElement("tr");
    row.dataset.levelId = String(level.id);
    const product = cell(shortId(level.product_id));
    product.title = level.product_id;
    const location = cell(shortId(level.location_id));
    location.title = level.location_id;
    row.append(product, location, cell("", "on_hand"), cell("", "reserved"), cell("", "available"));
    $("stock").tBodies[0].append(row);
  }
  for (const field of ["on_hand", "reserved", "available"]) {
    row.querySelector(`[data-field="${field}"]`).textContent = String(level[field]);
  }
  if (known) {
    row.classList.remove("changed");
    void row.offsetWidth; // restart the highlight
    row.classList.add("changed");
  }
  levels.set(level.id, { row, version: level.version });
}

/** The snapshot, and the stream position to continue from (read before the levels). */
async function loadSnapshot() {
  let position = null;
  let path = "/v1/stock?limit=100";
  for (let page = 0; path && page < MAX_SNAPSHOT_PAGES; page += 1) {
    const response = await api(path);
    if (!response.ok) throw new Error(`stock snapshot: ${response.status}`);
    if (position === null) position = Number(response.headers.get("X-Stream-Position") ?? 0);
    const body = await response.json();
    for (const level of body.data) applyLevel(level);
    path = body.has_more && body.next_cursor
      ? `/v1/stock?limit=100&cursor=${encodeURIComponent(body.next_cursor)}`
      : null;
  }
  return position;
}

function onEvent(message) {
  $("position").textContent = String(message.position);
  const data = message.data;
  if (message.type === STOCK_EVENT) {
    applyLevel({ ...data, id: data.stock_level_id, version: data.level_version });
  } else if (message.type.startsWith("order.")) {
    const item = document.createElement("li");
    const when = new Date(message.created_at).toLocaleTimeString();
    const total = (data.total_minor / 100).toFixed(2);
    item.textContent = `${when} — order ${shortId(data.order_id)} ${data.status}, ${total} ${data.currency}`;
    item.dataset.orderId = data.order_id;
    const feed = $("orders");
    feed.prepend(item);
    while (feed.children.length > MAX_FEED_ITEMS) feed.lastElementChild.remove();
  }
}

async function onReset(reset) {
  // The gap was too old to replay: reload the snapshot (values are absolute, so events
  // that also arrive on the stream are harmless to apply twice).
  $("position").textContent = String(reset.position);
  await loadSnapshot();
}

function metricValues(text, name) {
  const values = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = line.match(/^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$/);
    if (match && match[1] === name) values[match[2] ?? ""] = Number(match[3]);
  }
  return values;
}

async function refreshOps() {
  try {
    const response = await fetch("/metrics", { credentials: "same-origin" });
    if (!response.ok) throw new Error(String(response.status));
    const text = await response.text();
    const sum = (values) => Object.values(values).reduce((a, b) => a + b, 0);
    $("ops-queue").textContent = String(sum(metricValues(text, "shelfwise_jobs_queue_depth")));
    const lag = sum(metricValues(text, "shelfwise_outbox_lag_seconds"));
    $("ops-lag").textContent = `${lag.toFixed(2)} s`;
    const connections = metricValues(text, "shelfwise_live_connections");
    const parts = Object.entries(connections).map(
      ([labels, n]) => `${labels.match(/transport="([^"]+)"/)?.[1] ?? "?"} ${n}`,
    );
    $("ops-connections").textContent = `${sum(connections)} (${parts.join(", ") || "none"})`;
  } catch {
    $("ops-queue").textContent = $("ops-lag").textContent = $("ops-connections").textContent =
      "unavailable";
  }
}

const DELIVERIES_PER_WEBHOOK = 10;

/** The webhook delivery log: admins only (a 403 hides the panel). */
async function refreshWebhooks() {
  const response = await api("/v1/webhooks");
  if (!response.ok) {
    $("webhooks-panel").hidden = true;
    return;
  }
  $("webhooks-panel").hidden = false;
  const webhooks = (await response.json()).data;
  $("webhooks-empty").hidden = webhooks.length > 0;
  const rows = [];
  for (const webhook of webhooks) {
    const log = await api(
      `/v1/webhooks/${encodeURIComponent(webhook.id)}/deliveries?limit=${DELIVERIES_PER_WEBHOOK}`,
    );
    if (!log.ok) continue;
    for (const delivery of (await log.json()).data) {
      const row = document.createElement("tr");
      row.dataset.deliveryId = String(delivery.id);
      const target = cell(webhook.url);
      row.append(
        target,
        cell(delivery.event_type),
        cell(delivery.status),
        cell(String(delivery.attempts)),
        cell(delivery.response_code === null ? "–" : String(delivery.response_code)),
        cell(delivery.latency_ms === null ? "–" : `${delivery.latency_ms} ms`),
        cell(new Date(delivery.created_at).toLocaleString()),
      );
      if (delivery.last_error) row.title = delivery.last_error;
      rows.push(row);
    }
  }
  $("deliveries").tBodies[0].replaceChildren(...rows);
}

async function refreshPanels() {
  await Promise.all([refreshOps(), refreshWebhooks().catch(() => {})]);
}

async function startDashboard(email) {
  $("who-email").textContent = email;
  $("who").hidden = false;
  $("sign-in-panel").hidden = true;
  $("dashboard").hidden = false;
  showState("connecting");
  const position = await loadSnapshot();
  $("position").textContent = String(position);
  live = new LiveStream({
    channels: ["stock", "orders"],
    types: [STOCK_EVENT, ...ORDER_EVENTS],
    onEvent,
    onReset,
    onState: showState,
    onUnauthorized: signedOut,
  });
  live.start(position);
  await refreshPanels();
  opsTimer = setInterval(refreshPanels, OPS_REFRESH_MS);
}

function signedOut() {
  live?.stop();
  live = null;
  clearInterval(opsTimer);
  csrfToken = null;
  levels.clear();
  $("stock").tBodies[0].replaceChildren();
  $("orders").replaceChildren();
  $("deliveries").tBodies[0].replaceChildren();
  $("webhooks-panel").hidden = true;
  $("who").hidden = true;
  $("dashboard").hidden = true;
  $("sign-in-panel").hidden = false;
  showState("idle");
}

async function signIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  $("sign-in-error").textContent = "";
  const response = await api("/v1/auth/session", {
    method: "POST",
    body: { email: form.email.value, password: form.password.value },
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    $("sign-in-error").textContent = problem.detail ?? problem.title ?? "Sign-in failed";
    return;
  }
  const session = await response.json();
  csrfToken = session.csrf_token;
  form.password.value = "";
  await startDashboard(session.user.email);
}

async function signOut() {
  if (!csrfToken) {
    const response = await api("/v1/auth/csrf");
    if (response.ok) csrfToken = (await response.json()).csrf_token;
  }
  await api("/v1/auth/session", { method: "DELETE" });
  signedOut();
}

async function resumeSession() {
  const response = await api("/v1/auth/me");
  if (!response.ok) {
    showState("idle");
    return;
  }
  const me = await response.json();
  await startDashboard(me.user?.email ?? me.id);
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
resumeSession();

setupImports(() => csrfToken);
