// The staff console: the page says who is signed in (a JSON block the server renders with
// the session's role, scopes and CSRF token), so each panel is shown, and each API is
// asked, only when the role may read it. Plain ES modules, no build step.
import { json, explain, setCsrf, toast } from "./api.js";
import { setupImports } from "./imports.js";
import { LiveStream } from "./live.js";
import { OpsPanel } from "./ops.js";
import { OrdersPanel } from "./orders.js";
import { StockPanel } from "./stock.js";
import { refreshWebhooks } from "./webhooks.js";

const STOCK_EVENT = "stock.changed";
const ORDER_EVENTS = ["reserved", "confirmed", "cancelled", "fulfilled", "expired"].map(
  (status) => `order.${status}`,
);
const OPS_REFRESH_MS = 5000;
const WEBHOOKS_REFRESH_MS = 10000;
const STATE_LABELS = {
  idle: "signed out",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  polling: "live (polling)",
};

const $ = (id) => document.getElementById(id);
const me = JSON.parse($("bootstrap").textContent);

function showState(name) {
  $("connection").dataset.state = name;
  $("connection-state").textContent = STATE_LABELS[name] ?? name;
}

/** The panels this user may see, in tab order. */
function allowedPanels() {
  const scopes = new Set(me.scopes);
  return [...document.querySelectorAll("#tabs a")].filter((tab) => {
    if (tab.dataset.scope && !scopes.has(tab.dataset.scope)) return false;
    if (tab.dataset.role && !tab.dataset.role.split(" ").includes(me.role)) return false;
    return true;
  });
}

const timers = {};
let stock = null;
let orders = null;
let ops = null;

function showPanel(name, { focus = false } = {}) {
  const tabs = allowedPanels();
  const tab = tabs.find((t) => t.dataset.panel === name) ?? tabs[0];
  for (const t of tabs) {
    const current = t === tab;
    if (current) t.setAttribute("aria-current", "page");
    else t.removeAttribute("aria-current");
    $(`panel-${t.dataset.panel}`).hidden = !current;
  }
  clearInterval(timers.webhooks);
  if (tab?.dataset.panel === "webhooks") {
    refreshWebhooks();
    timers.webhooks = setInterval(refreshWebhooks, WEBHOOKS_REFRESH_MS);
  }
  if (focus && tab) {
    const heading = $(`panel-${tab.dataset.panel}`).querySelector("h1");
    heading.tabIndex = -1;
    heading.focus();
  }
}

function onEvent(message) {
  $("position").textContent = String(message.position);
  if (message.type === STOCK_EVENT) stock?.apply(message.data);
  else if (message.type.startsWith("order.")) orders?.onEvent(message.data);
}

async function onReset(reset) {
  // The gap was too old to replay: reload what is shown (stock values are absolute).
  $("position").textContent = String(reset.position);
  await Promise.all([stock?.load(), orders?.reload()]);
}

async function startConsole() {
  setCsrf(me.csrf_token);
  $("who-email").textContent = me.email;
  $("who-role").textContent = me.role;
  $("who").hidden = false;
  const tabs = allowedPanels();
  for (const tab of tabs) tab.hidden = false;
  for (const tab of document.querySelectorAll("#tabs a")) if (!tabs.includes(tab)) tab.remove();
  $("tabs").hidden = tabs.length === 0;
  $("no-panels").hidden = tabs.length > 0;
  if (!tabs.length) return;
  showPanel(location.hash.slice(1));
  window.addEventListener("hashchange", () => showPanel(location.hash.slice(1), { focus: true }));

  const scopes = new Set(me.scopes);
  const panels = new Set(tabs.map((t) => t.dataset.panel));
  let position = null;
  if (panels.has("stock")) {
    stock = new StockPanel({
      canWrite: scopes.has("stock:write"),
      lowThreshold: me.low_stock_threshold,
    });
    position = await stock.start();
    $("position").textContent = String(position);
  }
  if (panels.has("orders")) {
    orders = new OrdersPanel({
      scopes: me.scopes,
      canLookUpCustomers: me.role === "staff" || me.role === "admin",
      self: me,
      locations: () => stock?.locations ?? [],
    });
    await orders.start();
  }
  const channels = [...(stock ? ["stock"] : []), ...(orders ? ["orders"] : [])];
  if (channels.length) {
    showState("connecting");
    const live = new LiveStream({
      channels,
      types: [...(stock ? [STOCK_EVENT] : []), ...(orders ? ORDER_EVENTS : [])],
      onEvent,
      onReset,
      onState: showState,
      onUnauthorized: () => location.reload(),
    });
    live.start(position);
  }
  if (panels.has("imports")) setupImports(() => me.csrf_token);
  if (panels.has("ops")) {
    ops = new OpsPanel();
    await ops.refresh();
    timers.ops = setInterval(() => ops.refresh(), OPS_REFRESH_MS);
  }
}

async function signIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  $("sign-in-error").textContent = "";
  try {
    await json("/v1/auth/session", {
      method: "POST",
      body: { email: form.email.value, password: form.password.value },
    });
  } catch (error) {
    $("sign-in-error").textContent =
      error.status === 401 ? "Wrong email or password." : explain(error);
    form.password.select();
    return;
  }
  // The page renders who is signed in: load it again with the new session cookie.
  location.reload();
}

async function signOut() {
  try {
    await json("/v1/auth/session", { method: "DELETE" });
  } catch (error) {
    toast(`Sign-out failed: ${explain(error)}`, { error: true });
    return;
  }
  location.reload();
}

// "/" jumps to the stock search, as in many web apps.
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest?.("input, select, textarea");
  if (event.key === "/" && !typing && stock && !$("panel-stock").hidden) {
    event.preventDefault();
    $("stock-q").focus();
  }
});

$("sign-out").addEventListener("click", signOut);
if (me) {
  startConsole().catch((error) => toast(`The console could not start: ${error.message}`, { error: true }));
} else {
  $("sign-in-panel").hidden = false;
  $("sign-in").addEventListener("submit", signIn);
  $("email").focus();
}
