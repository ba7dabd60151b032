// The live connection: SSE first, long-poll when SSE does not get through, exponential
// backoff with jitter between attempts, and always resuming from the last position seen.
// See docs/live.md for the protocol.

export const BASE_DELAY_MS = 500;
export const MAX_DELAY_MS = 10000;
const SSE_FAILURES_BEFORE_POLLING = 2; // SSE attempts that never opened
const RETRY_SSE_AFTER_MS = 30000; // while polling, try SSE again after this long
const POLL_TIMEOUT_S = 25;

/** "Equal jitter": half the exponential step, plus a random share of the other half. */
export function backoffDelay(attempt, base = BASE_DELAY_MS, max = MAX_DELAY_MS) {
  const step = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return step / 2 + Math.random() * (step / 2);
}

export class LiveStream {
  /**
   * channels: ["stock", "orders", ...]; types: event types to listen for (SSE needs names);
   * onEvent({position, type, data, created_at}); onReset({reason, position, snapshot});
   * onState("connecting" | "live" | "reconnecting" | "polling");
   * onUnauthorized(): the session is gone (sign in again).
   */
  constructor({ channels, types, onEvent, onReset, onState, onUnauthorized }) {
    Object.assign(this, { channels, types, onEvent, onReset, onState, onUnauthorized });
    this.position = null;
    this.mode = "sse";
    this.attempt = 0;
    this.sseFailures = 0;
    this.stopped = true;
    this.source = null;
    this.timer = null;
    this.pollAbort = null;
    this.pollingSince = 0;
    this.onOnline = () => this.reconnectNow();
  }

  start(position) {
    this.position = position;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.state("connecting");
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
    this.pollAbort?.abort();
  }

  /** The network came back: skip the rest of the backoff. */
  reconnectNow() {
    if (this.stopped || this.source) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  state(name) {
    this.onState?.(name);
  }

  url(path, extra = {}) {
    const url = new URL(path, window.location.origin);
    url.searchParams.set("channels", this.channels.join(","));
    if (this.position !== null) url.searchParams.set("since", String(this.position));
    for (const [key, value] of Object.entries(extra)) url.searchParams.set(key, String(value));
    return url;
  }

  deliver(message) {
    if (this.position !== null && message.position <= this.position) return; // seen
    this.position = message.position;
    this.onEvent?.(message);
  }

  reset(reset) {
    this.position = reset.position;
    this.onReset?.(reset);
  }

  retryLater() {
    if (this.stopped) return;
    this.attempt += 1;
    this.state("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), backoffDelay(this.attempt));
  }

  connect() {
    if (this.stopped) return;
    if (this.mode === "poll") {
      this.poll();
      return;
    }
    const source = new EventSource(this.url("/v1/stream"), { withCredentials: true });
    this.source = source;
    let opened = false;
    const parse = (handler) => (event) => {
      if (this.source === source) handler(JSON.parse(event.data));
    };
    const drop = () => {
      source.close();
      if (this.source !== source) return;
      this.source = null;
      if (!opened) this.sseFailures += 1;
      if (this.sseFailures >= SSE_FAILURES_BEFORE_POLLING) {
        this.mode = "poll";
        this.pollingSince = Date.now();
      }
      this.retryLater();
    };
    source.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.sseFailures = 0;
      this.state("live");
    };
    source.onerror = drop;
    for (const type of this.types) source.addEventListener(type, parse((m) => this.deliver(m)));
    source.addEventListener("reset", parse((r) => this.reset(r)));
    // The server ends the stream: slow consumer, draining ("reconnect"), or revoked.
    source.addEventListener("reconnect", drop);
    source.addEventListener("close", parse((c) => {
      if (c.reason === "revoked") {
        this.stop();
        this.onUnauthorized?.();
      } else {
        drop();
      }
    }));
  }

  async poll() {
    const abort = new AbortController();
    this.pollAbort = abort;
    let response;
    try {
      response = await fetch(this.url("/v1/poll", { timeout: POLL_TIMEOUT_S }), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        signal: abort.signal,
      });
      if (response.status === 401) {
        this.stop();
        this.onUnauthorized?.();
        return;
      }
      if (response.status === 200) {
        const body = await response.json();
        for (const message of body.events) this.deliver(message);
        this.position = Math.max(this.position ?? 0, body.position);
      } else if (response.status === 204) {
        const head = Number(response.headers.get("X-Stream-Position"));
        if (Number.isFinite(head)) this.position = Math.max(this.position ?? 0, head);
      } else if (response.status === 410) {
        this.reset(await response.json());
      } else {
        throw new Error(`poll answered ${response.status}`);
      }
    } catch (error) {
      if (!this.stopped) this.retryLater();
      return;
    }
    if (this.stopped) return;
    this.attempt = 0;
    this.state("polling");
    if (Date.now() - this.pollingSince > RETRY_SSE_AFTER_MS) {
      this.mode = "sse"; // SSE may get through again (a proxy restarted, the network changed)
      this.sseFailures = 0;
    }
    this.timer = setTimeout(() => this.connect(), 0);
  }
}
