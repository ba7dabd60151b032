// The stock panel: levels by SKU, product and location name (GET /v1/stock/overview),
// searched and filtered on the server, keyset pages, live values from `stock.changed`,
// low stock marked, and adjustments and transfers in a dialog.
import { button, cell, explain, json, toast } from "./api.js";

const PAGE_SIZE = 25;
const SEARCH_DELAY_MS = 250;
const $ = (id) => document.getElementById(id);

export class StockPanel {
  constructor({ canWrite, lowThreshold }) {
    this.canWrite = canWrite;
    this.lowThreshold = lowThreshold;
    this.rows = new Map(); // stock level id -> { row, level }
    this.locations = [];
    this.cursors = [null]; // cursor of each page visited; the last is the current page
    this.nextCursor = null;
    this.position = null; // the stream position read with the first page
    this.searchTimer = null;
    this.dialogTarget = null;
    this.loading = null;
  }

  async start() {
    $("stock-filter").addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.reload(), SEARCH_DELAY_MS);
    });
    $("stock-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reload();
    });
    $("stock-next").addEventListener("click", () => this.turn(+1));
    $("stock-prev").addEventListener("click", () => this.turn(-1));
    $("stock-form").addEventListener("submit", (event) => this.save(event));
    $("stock-cancel").addEventListener("click", () => $("stock-dialog").close());
    await this.loadLocations();
    return this.reload();
  }

  async loadLocations() {
    const { body } = await json("/v1/locations?limit=100");
    this.locations = body.data;
    const select = $("stock-location");
    for (const location of this.locations) {
      const option = new Option(`${location.name} (${location.code})`, location.id);
      select.append(option);
    }
  }

  query(cursor) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const q = $("stock-q").value.trim();
    if (q) params.set("q", q);
    if ($("stock-location").value) params.set("location_id", $("stock-location").value);
    if ($("stock-low").checked) params.set("low", "true");
    if (cursor) params.set("cursor", cursor);
    return `/v1/stock/overview?${params}`;
  }

  reload() {
    this.cursors = [null];
    return this.load();
  }

  turn(step) {
    if (step > 0 && this.nextCursor) this.cursors.push(this.nextCursor);
    if (step < 0 && this.cursors.length > 1) this.cursors.pop();
    return this.load();
  }

  /** Loads the current page; returns the stream position read before its rows. */
  async load() {
    const path = this.query(this.cursors.at(-1));
    this.loading = path;
    let result;
    try {
      result = await json(path);
    } catch (error) {
      this.say(`Stock could not be loaded: ${explain(error)}`, true);
      return this.position ?? 0;
    }
    if (this.loading !== path) return this.position ?? 0; // a newer search won
    const { body, response } = result;
    const position = Number(response.headers.get("X-Stream-Position") ?? 0);
    if (this.position === null) this.position = position;
    this.render(body.data);
    this.nextCursor = body.has_more ? body.next_cursor : null;
    $("stock-next").disabled = !this.nextCursor;
    $("stock-prev").disabled = this.cursors.length <= 1;
    $("stock-page").textContent = `Page ${this.cursors.length}`;
    const filtered = $("stock-q").value.trim() || $("stock-location").value || $("stock-low").checked;
    $("stock").parentElement.hidden = body.data.length === 0;
    if (body.data.length === 0) {
      this.say(filtered ? "No stock matches these filters." : "No stock yet: receive some with the API or an import.");
    } else {
      this.say("");
    }
    return position;
  }

  say(text, error = false) {
    const message = $("stock-message");
    message.textContent = text;
    message.classList.toggle("error", error);
  }

  render(levels) {
    this.rows.clear();
    const body = $("stock").tBodies[0];
    body.replaceChildren(...levels.map((level) => this.row(level)));
  }

  row(level) {
    const tr = document.createElement("tr");
    tr.dataset.levelId = String(level.id);
    const sku = cell(level.sku, { label: "SKU", className: "sku" });
    const name = cell(level.product_name, { label: "Product" });
    const place = cell(level.location_name, { label: "Location" });
    place.title = level.location_code;
    tr.append(
      sku,
      name,
      place,
      cell("", { label: "On hand", className: "num on_hand" }),
      cell("", { label: "Reserved", className: "num reserved" }),
      cell("", { label: "Available", className: "num available" }),
    );
    const actions = cell("", { className: "actions" });
    if (this.canWrite) {
      const what = `${level.product_name} at ${level.location_name}`;
      actions.append(
        button("Adjust", () => this.open("adjust", tr), { "aria-label": `Adjust ${what}` }),
        button("Transfer", () => this.open("transfer", tr), { "aria-label": `Transfer ${what}` }),
      );
    }
    tr.append(actions);
    this.rows.set(level.id, { row: tr, level });
    this.fill(tr, level);
    return tr;
  }

  fill(tr, level) {
    const available = level.on_hand - level.reserved;
    tr.querySelector(".on_hand").textContent = String(level.on_hand);
    tr.querySelector(".reserved").textContent = String(level.reserved);
    const cellAvailable = tr.querySelector(".available");
    cellAvailable.textContent = String(available);
    const low = available < this.lowThreshold;
    tr.classList.toggle("low", low);
    if (low) {
      const tag = document.createElement("span");
      tag.className = "low-tag";
      tag.textContent = "low";
      cellAvailable.append(tag);
    }
  }

  /** A `stock.changed` event: update the row if this page shows it (newer versions only). */
  apply(change) {
    const known = this.rows.get(change.stock_level_id);
    if (!known || known.level.version >= change.level_version) return;
    const level = { ...known.level, ...change, version: change.level_version };
    known.level = level;
    this.fill(known.row, level);
    known.row.classList.remove("changed");
    void known.row.offsetWidth; // restart the highlight
    known.row.classList.add("changed");
  }

  open(kind, tr) {
    const { level } = this.rows.get(Number(tr.dataset.levelId));
    this.dialogTarget = { kind, level, row: tr };
    const transfer = kind === "transfer";
    $("stock-dialog-title").textContent = transfer ? "Transfer stock" : "Adjust stock";
    $("stock-form-target").textContent =
      `${level.product_name} (${level.sku}) at ${level.location_name}: ` +
      `${level.on_hand - level.reserved} available`;
    $("adjust-fields").hidden = transfer;
    $("transfer-fields").hidden = !transfer;
    const to = $("transfer-to");
    to.replaceChildren(
      ...this.locations
        .filter((l) => l.id !== level.location_id)
        .map((l) => new Option(`${l.name} (${l.code})`, l.id)),
    );
    $("stock-quantity").min = transfer ? "1" : "";
    $("stock-quantity").value = "";
    $("stock-reason").value = "";
    $("stock-form-error").textContent = "";
    $("stock-dialog").showModal();
    $("stock-quantity").focus();
  }

  async save(event) {
    event.preventDefault();
    const { kind, level } = this.dialogTarget;
    const quantity = Number($("stock-quantity").value);
    const reason = $("stock-reason").value.trim();
    const body =
      kind === "transfer"
        ? {
            product_id: level.product_id,
            from_location_id: level.location_id,
            to_location_id: $("transfer-to").value,
            quantity,
            reason,
          }
        : {
            product_id: level.product_id,
            location_id: level.location_id,
            kind: $("adjust-kind").value,
            quantity,
            reason,
          };
    const path = kind === "transfer" ? "/v1/stock/transfers" : "/v1/stock/adjustments";
    $("stock-save").disabled = true;
    try {
      const { body: result } = await json(path, { method: "POST", body, idempotent: true });
      $("stock-dialog").close();
      // The stream will say the same; applying the answer now makes the change visible
      // at once, and the version check ignores the echo.
      for (const changed of kind === "transfer" ? [result.source, result.destination] : [result.level]) {
        this.apply({ ...changed, stock_level_id: changed.id, level_version: changed.version });
      }
      toast(kind === "transfer" ? `Moved ${quantity} × ${level.sku}` : `Stock of ${level.sku} updated`);
      this.dialogTarget.row.querySelector("button")?.focus();
    } catch (error) {
      $("stock-form-error").textContent = explain(error);
    } finally {
      $("stock-save").disabled = false;
    }
  }
}
