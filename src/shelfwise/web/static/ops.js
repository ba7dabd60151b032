// The operations panel: a few of this API process's Prometheus metrics, sampled every few
// seconds and drawn as small SVG line charts (built with DOM calls: the CSP allows no
// inline code or styles, and needs none).

const SAMPLES = 30;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

/** Every sample of one metric: {labels string: value}. */
export function metricValues(text, name) {
  const values = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = line.match(/^([a-z_:]+)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$/);
    if (match && match[1] === name) values[match[2] ?? ""] = Number(match[3]);
  }
  return values;
}

const sum = (values) => Object.values(values).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);

function draw(svg, series) {
  const max = Math.max(1, 1.25 * Math.max(...series)); // headroom above the highest sample
  const step = 120 / (SAMPLES - 1);
  const offset = SAMPLES - series.length;
  const y = (v) => (30 - (28 * v) / max).toFixed(1);
  const points = series.map((v, i) => `${((offset + i) * step).toFixed(1)},${y(v)}`);
  // One sample is a point: draw it as a short level segment so it shows.
  if (series.length === 1) points.unshift(`${(120 - step).toFixed(1)},${y(series[0])}`);
  const base = document.createElementNS(SVG, "line");
  for (const [name, value] of Object.entries({ x1: 0, y1: 30.5, x2: 120, y2: 30.5 })) {
    base.setAttribute(name, String(value));
  }
  base.setAttribute("class", "axis");
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.replaceChildren(base, line);
}

export class OpsPanel {
  constructor() {
    this.series = { orders: [], lag: [], queue: [], connections: [] };
    this.lastOrders = null; // [count, time ms]
  }

  push(name, value, label) {
    const series = this.series[name];
    series.push(value);
    if (series.length > SAMPLES) series.shift();
    $(`ops-${name}`).textContent = label;
    draw($(`chart-${name}`), series);
  }

  async refresh() {
    let text;
    try {
      const response = await fetch("/metrics", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      text = await response.text();
    } catch (error) {
      $("ops-message").textContent = `Metrics unavailable (${error.message}).`;
      return;
    }
    $("ops-message").textContent = "";
    const now = Date.now();
    const placed = metricValues(text, "shelfwise_orders_total");
    const reserved = Object.entries(placed)
      .filter(([labels]) => labels.includes('"reserved"'))
      .reduce((a, [, v]) => a + v, 0);
    let perMinute = 0;
    if (this.lastOrders) {
      const [count, at] = this.lastOrders;
      perMinute = Math.max(0, ((reserved - count) * 60000) / Math.max(1, now - at));
    }
    this.lastOrders = [reserved, now];
    this.push("orders", perMinute, perMinute.toFixed(1));
    const lag = sum(metricValues(text, "shelfwise_outbox_lag_seconds"));
    this.push("lag", lag, `${lag.toFixed(2)} s`);
    const queue = sum(metricValues(text, "shelfwise_jobs_queue_depth"));
    this.push("queue", queue, String(queue));
    const connections = metricValues(text, "shelfwise_live_connections");
    const parts = Object.entries(connections)
      .filter(([, n]) => n > 0)
      .map(([labels, n]) => `${labels.match(/transport="([^"]+)"/)?.[1] ?? "?"} ${n}`);
    this.push("connections", sum(connections), `${sum(connections)} (${parts.join(", ") || "none"})`);
  }
}
