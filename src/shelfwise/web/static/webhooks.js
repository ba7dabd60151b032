// The webhooks panel (admins only; the console never asks for it otherwise): each webhook
// and the delivery log of its latest deliveries.
import { cell, explain, json } from "./api.js";

const DELIVERIES_PER_WEBHOOK = 10;
const $ = (id) => document.getElementById(id);

function card(webhook) {
  const li = document.createElement("li");
  li.dataset.webhookId = webhook.id;
  const url = document.createElement("strong");
  url.textContent = webhook.url;
  const facts = document.createElement("span");
  facts.className = "sub";
  const failures = webhook.consecutive_failures ? `, ${webhook.consecutive_failures} failures in a row` : "";
  facts.textContent = `${webhook.status}${failures} · ${webhook.event_types.join(", ")}`;
  li.append(url, facts);
  return li;
}

function deliveryRow(webhook, delivery) {
  const tr = document.createElement("tr");
  tr.dataset.deliveryId = String(delivery.id);
  tr.append(
    cell(webhook.url, { label: "Webhook" }),
    cell(delivery.event_type, { label: "Event" }),
    cell(delivery.status, { label: "Status" }),
    cell(String(delivery.attempts), { label: "Attempts", className: "num" }),
    cell(delivery.response_code === null ? "–" : String(delivery.response_code), {
      label: "HTTP",
      className: "num",
    }),
    cell(delivery.latency_ms === null ? "–" : `${delivery.latency_ms} ms`, {
      label: "Latency",
      className: "num",
    }),
    cell(new Date(delivery.created_at).toLocaleString(), { label: "Created" }),
  );
  if (delivery.last_error) tr.title = delivery.last_error;
  return tr;
}

export async function refreshWebhooks() {
  let webhooks;
  try {
    webhooks = (await json("/v1/webhooks")).body.data;
  } catch (error) {
    $("webhooks-message").textContent = `Webhooks could not be loaded: ${explain(error)}`;
    $("webhooks-message").classList.add("error");
    return;
  }
  $("webhooks-message").classList.remove("error");
  $("webhooks").replaceChildren(...webhooks.map(card));
  const rows = [];
  for (const webhook of webhooks) {
    try {
      const path = `/v1/webhooks/${encodeURIComponent(webhook.id)}/deliveries?limit=${DELIVERIES_PER_WEBHOOK}`;
      for (const delivery of (await json(path)).body.data) rows.push(deliveryRow(webhook, delivery));
    } catch {
      // One webhook's log failing leaves the others readable.
    }
  }
  rows.sort((a, b) => Number(b.dataset.deliveryId) - Number(a.dataset.deliveryId));
  $("deliveries").tBodies[0].replaceChildren(...rows);
  $("webhooks-message").textContent = webhooks.length
    ? rows.length
      ? ""
      : "No deliveries yet."
    : "No webhooks yet. Create one with POST /v1/webhooks (docs/webhooks.md).";
}
