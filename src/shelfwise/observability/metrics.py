"""Prometheus metrics shared by the whole process.

Labels use the route *template* (`/v1/products/{product_id}`), never the raw path, so a
scan of random ids cannot explode the number of time series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Which instance answered a scrape, as an info-style gauge (always 1) rather than a label
# on every series: Prometheus already labels each target with `instance` (host:port), and
# one joinable series keeps the cardinality flat (docs/deploy.md, "Topology").
INSTANCE_INFO = Gauge(
    "shelfwise_instance_info",
    "1 for this process; instance_id names it in logs (the `instance` field) too.",
    ["instance_id", "role"],
)

HTTP_REQUESTS = Counter(
    "shelfwise_http_requests_total",
    "HTTP requests handled, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "shelfwise_http_request_duration_seconds",
    "Time from first byte in to last byte out, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge(
    "shelfwise_http_requests_in_flight",
    "Requests currently being handled.",
)
HTTP_REJECTED_BODIES = Counter(
    "shelfwise_http_body_too_large_total",
    "Requests refused because the body exceeded the limit.",
)
HTTP_PARSER_REFUSALS = Counter(
    "shelfwise_http_connections_refused_total",
    "Connections answered by the server protocol itself and closed: header_timeout, "
    "headers_too_large, malformed_request.",
    ["reason"],
)
UNHANDLED_ERRORS = Counter(
    "shelfwise_unhandled_errors_total",
    "Exceptions that reached the error handler unmapped (answered as 500).",
    ["exception"],
)
PASSWORD_HASH_SECONDS = Histogram(
    "shelfwise_password_hash_seconds",
    "argon2id hash/verify time, measured in the worker thread.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
AUTH_FAILURES = Counter(
    "shelfwise_auth_failures_total",
    "Rejected authentication attempts, by reason (never the credential).",
    ["reason"],
)
STOCK_ADJUSTMENTS = Counter(
    "shelfwise_stock_adjustments_total",
    "Committed stock adjustments, by kind.",
    ["kind"],
)
DB_POOL_CHECKED_OUT = Gauge(
    "shelfwise_db_pool_checked_out",
    "Database connections currently checked out of the pool.",
)
TX_RETRIES = Counter(
    "shelfwise_db_transaction_retries_total",
    "Transactions retried after a serialization failure (40001) or deadlock (40P01).",
    ["use_case", "sqlstate"],
)
ORDERS_PLACED = Counter(
    "shelfwise_orders_total",
    "Order placement attempts by outcome (reserved, replayed; refused: insufficient_stock, "
    "unknown_product, mixed_currencies, location_not_found).",
    ["outcome"],
)
ORDER_TRANSITIONS = Counter(
    "shelfwise_order_transitions_total",
    "Order status changes, by target status.",
    ["status"],
)
RESERVATIONS_EXPIRED = Counter(
    "shelfwise_reservations_expired_total",
    "Orders whose reservation expired and whose stock was released.",
)
RATE_LIMITED = Counter(
    "shelfwise_rate_limited_total",
    "Requests refused by a rate limit or concurrency cap, by policy.",
    ["policy"],
)
SECURITY_EVENTS = Counter(
    "shelfwise_security_events_total",
    "Security-relevant events (refresh-token reuse, CSRF failures, lockouts), by kind.",
    ["kind"],
)
REQUEST_TIMEOUTS = Counter(
    "shelfwise_request_timeouts_total",
    "Requests cut off by the server-side request timeout, by route template.",
    ["route"],
)

# -- outbox, relay and jobs (issue 5) ------------------------------------------------------
OUTBOX_LAG = Gauge(
    "shelfwise_outbox_lag_seconds",
    "Age of the oldest committed event not yet given a stream position (0 when none).",
)
OUTBOX_PUBLISHED = Counter(
    "shelfwise_outbox_events_published_total",
    "Events stamped with a stream position by this process's relay.",
)
OUTBOX_RELAY_BATCH_SECONDS = Histogram(
    "shelfwise_outbox_relay_batch_seconds",
    "Duration of one relay stamping transaction that published at least one event.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
OUTBOX_RELAY_ACTIVE = Gauge(
    "shelfwise_outbox_relay_active",
    "1 while this process holds the relay's advisory lock (exactly one process should).",
)
JOB_DURATION = Histogram(
    "shelfwise_job_duration_seconds",
    "Job run time, by task and outcome (succeeded, retry, failed).",
    ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0),
)
JOBS_FAILED = Counter(
    "shelfwise_jobs_failed_total",
    "Jobs that exhausted their retries and went to the dead-letter state ('failed').",
    ["task"],
)
JOB_RETRIES = Counter(
    "shelfwise_job_retries_total",
    "Failed job attempts that were scheduled for another try.",
    ["task"],
)
JOBS_QUEUE_DEPTH = Gauge(
    "shelfwise_jobs_queue_depth",
    "Jobs ready to run now (status todo, due), by queue.",
    ["queue"],
)
JOBS_OLDEST_AGE = Gauge(
    "shelfwise_jobs_oldest_ready_age_seconds",
    "How long the oldest ready job of each queue has been waiting.",
    ["queue"],
)
JOBS_DEAD = Gauge(
    "shelfwise_jobs_dead_letters",
    "Jobs in the dead-letter state ('failed'), by queue.",
    ["queue"],
)
STALLED_JOBS_RECOVERED = Counter(
    "shelfwise_jobs_stalled_recovered_total",
    "Jobs of dead workers (no heartbeat) handed back to the queue.",
)
LOW_STOCK_LEVELS = Gauge(
    "shelfwise_low_stock_levels",
    "Stock levels under the low-stock threshold at the last report.",
)
LEDGER_DRIFT_LEVELS = Gauge(
    "shelfwise_ledger_drift_levels",
    "Levels whose counters disagree with the ledger or open reservations (should be 0).",
)
LIVE_CONNECTIONS = Gauge(
    "shelfwise_live_connections",
    "Open live connections, by transport (sse, ws, poll).",
    ["transport"],
)
LIVE_CONNECTS = Counter(
    "shelfwise_live_connects_total", "Live connections opened, by transport.", ["transport"]
)
LIVE_DISCONNECTS = Counter(
    "shelfwise_live_disconnects_total",
    "Live connections closed, by transport and reason (client, slow_consumer, draining, "
    "revoked, error).",
    ["transport", "reason"],
)
LIVE_RESUMES = Counter(
    "shelfwise_live_resumes_total",
    "Reconnects with a position, by transport and where the gap was served from "
    "(window, database, reset).",
    ["transport", "source"],
)
LIVE_SLOW_DISCONNECTS = Counter(
    "shelfwise_live_slow_consumer_disconnects_total",
    "Clients disconnected because they could not keep up with the stream.",
    ["transport"],
)
LIVE_UNKNOWN_EVENTS = Counter(
    "shelfwise_live_unknown_events_total",
    "Fan-out decisions on an event whose type is not an EventType, so no live channel "
    "carries it (should be 0: a writer bypassed the check, or a newer release wrote it).",
)
LIVE_EVENTS_SENT = Counter(
    "shelfwise_live_events_sent_total",
    "Events written to live clients, by transport.",
    ["transport"],
)
LIVE_FANOUT_LATENCY = Histogram(
    "shelfwise_live_fanout_latency_seconds",
    "From the event's commit (outbox insert) to being written to a client socket.",
    ["transport"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CACHE_REQUESTS = Counter(
    "shelfwise_cache_requests_total",
    "Application cache lookups, by cache and result (hit, miss, coalesced).",
    ["cache", "result"],
)
CACHE_EVICTIONS = Counter(
    "shelfwise_cache_evictions_total",
    "Application cache entries removed, by cache and reason (invalidated, size).",
    ["cache", "reason"],
)

# -- signals (issue 11): event loop, database, reservations ------------------------------
LOOP_LAG = Histogram(
    "shelfwise_event_loop_lag_seconds",
    "How late the event loop ran a timer due now (sampled continuously).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
LOOP_BLOCKED = Counter(
    "shelfwise_event_loop_blocked_total",
    "Stalls of the event loop longer than the threshold (each logged as event_loop_blocked).",
)
DB_SLOW_STATEMENTS = Counter(
    "shelfwise_db_slow_statements_total",
    "Statements slower than the threshold (each logged as db_slow_statement), by pool.",
    ["pool"],
)
DB_STATEMENT_DURATION = Histogram(
    "shelfwise_db_statement_duration_seconds",
    "Statement execution time as the application saw it, by pool.",
    ["pool"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
DB_POOL_WAIT = Histogram(
    "shelfwise_db_pool_wait_seconds",
    "Time spent waiting for a pooled connection (sqlalchemy or driver pool).",
    ["pool"],
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_POOL_TIMEOUTS = Counter(
    "shelfwise_db_pool_timeouts_total",
    "Connection requests that gave up waiting for the pool (answered 503), by pool.",
    ["pool"],
)
DB_CONNECTION_LEAKS = Counter(
    "shelfwise_db_connections_held_too_long_total",
    "Checkouts held past db_connection_held_warn_seconds (each logged with the stack that "
    "took the connection as db_connection_held_too_long), by pool.",
    ["pool"],
)
DB_IDLE_IN_TRANSACTION = Gauge(
    "shelfwise_db_idle_in_transaction_sessions",
    "Sessions of this database idle inside an open transaction (pg_stat_activity).",
)
DB_IDLE_IN_TRANSACTION_AGE = Gauge(
    "shelfwise_db_idle_in_transaction_max_age_seconds",
    "How long the longest idle-in-transaction session has been idle.",
)
DB_LONG_TRANSACTIONS = Gauge(
    "shelfwise_db_long_transactions",
    "Transactions open longer than db_long_transaction_seconds (pg_stat_activity).",
)
DB_OLDEST_TRANSACTION_AGE = Gauge(
    "shelfwise_db_oldest_transaction_age_seconds",
    "Age of the oldest open transaction on this database (0 when none).",
)
RESERVATIONS_OUTSTANDING = Gauge(
    "shelfwise_reservations_outstanding",
    "Orders holding a reservation (status reserved).",
)
RESERVATIONS_OLDEST_AGE = Gauge(
    "shelfwise_reservations_oldest_age_seconds",
    "Age of the oldest outstanding reservation.",
)
RESERVATIONS_OVERDUE = Gauge(
    "shelfwise_reservations_overdue",
    "Reservations past their expiry not yet released (the expiry job's backlog).",
)
RESERVATIONS_OVERDUE_AGE = Gauge(
    "shelfwise_reservations_overdue_max_age_seconds",
    "How long past its expiry the most overdue unreleased reservation is (0 when none).",
)
STOCK_OUT_LEVELS = Gauge(
    "shelfwise_stock_out_levels",
    "Stock levels with nothing available (on_hand - reserved <= 0).",
)
# Resilience: what this process sees of its dependencies (src/shelfwise/availability.py).
DEPENDENCY_UP = Gauge(
    "shelfwise_dependency_up",
    "1 while this process reaches the dependency, 0 while it is known down (fail fast).",
    ["dependency"],
)
DEPENDENCY_FAILURES = Counter(
    "shelfwise_dependency_failures_total",
    "Operations that failed because a dependency was unreachable, by what degraded.",
    ["dependency", "component"],
)
DEPENDENCY_FAST_FAILS = Counter(
    "shelfwise_dependency_fast_fails_total",
    "Requests answered 503 at once because the circuit breaker knew the dependency down.",
    ["dependency"],
)
JOB_WORKER_RESTARTS = Counter(
    "shelfwise_job_worker_restarts_total",
    "Times the worker process restarted Procrastinate after it stopped on its own "
    "(its database connections failed).",
)
# Hot-row admission (src/shelfwise/orders/admission.py): one-line orders at a location.
ADMISSION_ANSWERS = Counter(
    "shelfwise_admission_total",
    "One-line orders at a location through the hot-level gate, by outcome: admitted to "
    "the database, answered sold_out by the gate, or stored_key (a retry sent on to replay).",
    ["outcome"],
)
ADMISSION_WAITING = Gauge(
    "shelfwise_admission_waiting",
    "Orders waiting at the hot-level gate for a slot on their stock level.",
)
