// The orders panel: a live list (status, customer, total), an order's detail with its
// lines by product name, and confirm / cancel / fulfil where the user's scopes allow.
import { button, cell, explain, json, money, toast } from "./api.js";

const PAGE_SIZE = 25;
const $ = (id) => document.getElementById(id);

/** Which actions an order in a status allows: [label, path suffix, scope needed]. */
const ACTIONS = {
  reserved: [["Confirm", "confirm", "orders:write"], ["Cancel", "cancel", "orders:write"]],
  confirmed: [["Fulfil", "fulfil", "orders:manage"], ["Cancel", "cancel", "orders:write"]],
};

export class OrdersPanel {
  constructor({ scopes, canLookUpCustomers, self, locations }) {
    this.scopes = new Set(scopes);
    this.canLookUpCustomers = canLookUpCustomers;
    this.self = self; // the signed-in user: a customer's orders are their own
    this.locations = locations; // () => [{id, code, name}]
    this.rows = new Map(); // order id -> { row, order }
    this.customers = new Map(); // user id -> email
    this.products = new Map(); // product id -> product
    this.nextCursor = null;
    this.detailId = null;
  }

  async start() {
    $("orders-status").addEventListener("change", () => this.reload());
    $("orders-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reload();
    });
    $("orders-more").addEventListener("click", () => this.load(this.nextCursor));
    $("order-detail-close").addEventListener("click", () => this.closeDetail());
    await this.reload();
  }

  reload() {
    this.rows.clear();
    $("orders").tBodies[0].replaceChildren();
    return this.load(null);
  }

  async load(cursor) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if ($("orders-status").value) params.set("status", $("orders-status").value);
    if (cursor) params.set("cursor", cursor);
    let body;
    try {
      ({ body } = await json(`/v1/orders?${params}`));
    } catch (error) {
      this.say(`Orders could not be loaded: ${explain(error)}`, true);
      return;
    }
    await this.lookUpCustomers(body.data);
    for (const order of body.data) $("orders").tBodies[0].append(this.row(order));
    this.nextCursor = body.has_more ? body.next_cursor : null;
    $("orders-more").hidden = !this.nextCursor;
    this.sayEmpty();
  }

  sayEmpty() {
    $("orders").parentElement.hidden = this.rows.size === 0;
    if (this.rows.size > 0) this.say("");
    else if ($("orders-status").value) this.say("No orders with this status.");
    else this.say("No orders yet. New orders appear here as they are placed.");
  }

  say(text, error = false) {
    $("orders-message").textContent = text;
    $("orders-message").classList.toggle("error", error);
  }

  async lookUpCustomers(orders) {
    const unknown = [
      ...new Set(orders.map((o) => o.placed_by_user_id).filter((id) => id && !this.customers.has(id))),
    ];
    if (!unknown.length || !this.canLookUpCustomers) return;
    const params = new URLSearchParams(unknown.map((id) => ["id", id]));
    try {
      const { body } = await json(`/v1/users/contacts?${params}`);
      for (const contact of body) this.customers.set(contact.id, contact.email);
    } catch {
      // Names are a convenience; the list still shows without them.
    }
  }

  customer(order) {
    if (order.placed_by_api_key_id) return "API integration";
    if (!order.placed_by_user_id) return "–";
    if (order.placed_by_user_id === this.self.id) return this.self.email;
    return this.customers.get(order.placed_by_user_id) ?? "customer";
  }

  row(order) {
    const tr = document.createElement("tr");
    tr.dataset.orderId = order.id;
    this.rows.set(order.id, { row: tr, order });
    this.fill(tr, order);
    return tr;
  }

  fill(tr, order) {
    const placed = new Date(order.created_at);
    const opener = button(`#${order.id.slice(0, 8)}`, () => this.openDetail(order.id), {
      "aria-label": `Open order ${order.id.slice(0, 8)}`,
      class: "link sku",
    });
    const reference = cell("", { label: "Order" });
    reference.append(opener);
    const status = cell(order.status, { label: "Status", className: "status" });
    status.dataset.status = order.status;
    tr.replaceChildren(
      cell(placed.toLocaleString(), { label: "Placed" }),
      reference,
      cell(this.customer(order), { label: "Customer" }),
      status,
      cell(money(order.total_minor, order.currency), { label: "Total", className: "num" }),
      this.actions(order),
    );
  }

  actions(order) {
    const td = cell("", { className: "actions" });
    for (const [label, action, scope] of ACTIONS[order.status] ?? []) {
      if (!this.scopes.has(scope)) continue;
      td.append(
        button(label, () => this.act(order.id, action), {
          "aria-label": `${label} order ${order.id.slice(0, 8)}`,
        }),
      );
    }
    return td;
  }

  async act(orderId, action) {
    try {
      const { body } = await json(`/v1/orders/${orderId}/${action}`, { method: "POST" });
      this.update(body);
      toast(`Order ${orderId.slice(0, 8)} ${body.status}`);
    } catch (error) {
      toast(`Order ${orderId.slice(0, 8)}: ${explain(error)}`, { error: true });
    }
  }

  /** A fresh representation of an order (an action's answer or a re-read after an event). */
  update(order) {
    const known = this.rows.get(order.id);
    if (known && known.order.version > order.version) return;
    const filter = $("orders-status").value;
    if (known) {
      known.order = order;
      this.fill(known.row, order);
      known.row.classList.remove("changed");
      void known.row.offsetWidth;
      known.row.classList.add("changed");
    } else if (!filter || filter === order.status) {
      $("orders").tBodies[0].prepend(this.row(order));
    }
    if (this.detailId === order.id) this.renderDetail(order);
    this.sayEmpty();
  }

  /** An `order.*` event: re-read the order (the event lacks lines' prices and names). */
  async onEvent(data) {
    const known = this.rows.get(data.order_id);
    if (known && known.order.status === data.status) return;
    try {
      const { body } = await json(`/v1/orders/${data.order_id}`);
      await this.lookUpCustomers([body]);
      this.update(body);
    } catch {
      // Gone or not visible to this user: nothing to show.
    }
  }

  async openDetail(orderId) {
    this.detailId = orderId;
    try {
      const { body } = await json(`/v1/orders/${orderId}`);
      await this.renderDetail(body);
      $("order-detail").hidden = false;
      $("order-detail").focus();
    } catch (error) {
      toast(`Order ${orderId.slice(0, 8)}: ${explain(error)}`, { error: true });
    }
  }

  closeDetail() {
    const id = this.detailId;
    this.detailId = null;
    $("order-detail").hidden = true;
    this.rows.get(id)?.row.querySelector("button")?.focus();
  }

  async product(id) {
    if (!this.products.has(id)) {
      try {
        this.products.set(id, (await json(`/v1/products/${id}`)).body);
      } catch {
        this.products.set(id, { sku: "–", name: "(deleted product)" });
      }
    }
    return this.products.get(id);
  }

  async renderDetail(order) {
    $("order-detail-title").textContent = `Order #${order.id.slice(0, 8)}`;
    const facts = [
      ["Status", order.status],
      ["Customer", this.customer(order)],
      ["Total", money(order.total_minor, order.currency)],
      ["Placed", new Date(order.created_at).toLocaleString()],
      ["Reservation expires", new Date(order.expires_at).toLocaleString()],
      ["Order id", order.id],
    ];
    $("order-facts").replaceChildren(
      ...facts.flatMap(([term, value]) => {
        const dt = document.createElement("dt");
        dt.textContent = term;
        const dd = document.createElement("dd");
        dd.textContent = value;
        return [dt, dd];
      }),
    );
    const places = new Map(this.locations().map((l) => [l.id, l.name]));
    const rows = [];
    for (const line of order.lines) {
      const product = await this.product(line.product_id);
      const tr = document.createElement("tr");
      tr.append(
        cell(product.sku, { label: "SKU", className: "sku" }),
        cell(product.name, { label: "Product" }),
        cell(places.get(line.location_id) ?? "–", { label: "Location" }),
        cell(String(line.quantity), { label: "Quantity", className: "num" }),
        cell(money(line.unit_price_minor, line.currency), { label: "Unit price", className: "num" }),
      );
      rows.push(tr);
    }
    $("order-lines").tBodies[0].replaceChildren(...rows);
    $("order-detail-actions").replaceChildren(...this.actions(order).childNodes);
  }
}
