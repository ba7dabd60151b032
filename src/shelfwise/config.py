"""Typed settings, read once at start-up.

Sources, highest priority first: init kwargs (tests), environment variables, `.env`
(development only), secret files in `/run/secrets`. Production refuses development
secrets and insecure settings rather than starting in a dangerous state.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Anything starting with this marker is a development default and is refused in production.
DEV_SECRET_PREFIX = "dev-insecure-"  # noqa: S105 (a marker, not a secret)
SECRETS_DIR = Path("/run/secrets")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServerRole(StrEnum):
    """What `shelfwise serve` answers (docs/deploy.md, "Live instances")."""

    ALL = "all"  # everything: one process, development, small shops
    API = "api"  # everything but the live endpoints (those get 421)
    LIVE = "live"  # only /v1/stream, /v1/ws, /v1/poll, health and metrics


class InsecureSettingsError(ValueError):
    """Raised when production would start with a development secret or unsafe option."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHELFWISE_",
        env_file=".env",
        extra="ignore",
        secrets_dir=str(SECRETS_DIR) if SECRETS_DIR.is_dir() else None,
    )

    env: Environment = Environment.DEVELOPMENT
    # Unprefixed, as every platform names them.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SHELFWISE_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SHELFWISE_REDIS_URL")
    )
    # Topology (docs/deploy.md). When DATABASE_URL goes through pgbouncer in transaction
    # mode, session features (LISTEN, the relay's session advisory lock, Procrastinate's
    # listener) need a connection of their own straight to PostgreSQL: this DSN. Unset: the
    # main DSN, which then must be direct.
    direct_database_url: str | None = None
    # The main DSN is a transaction-pooling pgbouncer (1.18 has no prepared-statement
    # support): psycopg must not prepare statements and no startup `options` are sent
    # (pgbouncer refuses them; its connect_query sets the statement timeout instead).
    db_transaction_pooling: bool = False
    # Names this process in every log line and in `shelfwise_instance_info`. Empty: `serve`
    # uses host:port, other commands host-pid (see `instance_name`).
    instance_id: str = ""
    # `shelfwise serve --role`: live connections in processes of their own, so a fan-out
    # burst cannot delay an order (docs/live.md, "Live instances").
    server_role: ServerRole = ServerRole.ALL
    data_dir: Path = Path("var")

    host: str = "127.0.0.1"
    port: int = 8000

    # Secrets. Development values are recognisable so production can refuse them.
    jwt_secret: SecretStr = SecretStr(DEV_SECRET_PREFIX + "jwt-signing-key-change-me-0123456789")
    jwt_key_id: str = "k1"
    cursor_secret: SecretStr = SecretStr(DEV_SECRET_PREFIX + "cursor-key-change-me-0123456789")

    # Key rotation: previous signing keys still verify (JSON object kid -> secret).
    jwt_previous_keys: dict[str, SecretStr] = Field(default_factory=dict)
    session_secret: SecretStr = SecretStr(DEV_SECRET_PREFIX + "session-csrf-key-change-me-0123")

    access_token_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    jwt_issuer: str = "shelfwise"
    refresh_idle_days: int = Field(default=7, ge=1)
    refresh_absolute_days: int = Field(default=30, ge=1)
    session_idle_minutes: int = Field(default=120, ge=1)
    session_absolute_hours: int = Field(default=24, ge=1)
    # Cookies are Secure and __Host- prefixed; turn off ONLY for plain-http local tooling.
    cookie_secure: bool = True

    # Abuse resistance (the `limits` library; Redis storage when REDIS_URL is set).
    rate_limit_enabled: bool = True
    rate_limit_anonymous: str = "300/minute"
    rate_limit_authenticated: str = "1200/minute"
    rate_limit_login: str = "20/minute"
    rate_limit_register: str = "5/minute;20/hour"
    rate_limit_refresh: str = "30/minute"
    # Failed logins per account: the tiers make the lockout grow (minute, hour, day).
    login_failures_per_account: str = "5/minute;20/hour;100/day"
    max_concurrent_requests_per_client: int = Field(default=256, ge=1)
    # uvicorn's cap on open connections + tasks per worker (503 beyond). Live streams are
    # connections: a worker holding 5,000 subscribers needs more than that.
    server_limit_concurrency: int = Field(default=10_000, ge=1)
    server_backlog: int = Field(default=2048, ge=1)
    # A connection's request headers must be complete within this (slowloris), else 408;
    # and may not exceed this many bytes (request line included), else 431.
    server_header_timeout_seconds: float = Field(default=10.0, gt=0)
    server_max_header_bytes: int = Field(default=16_384, ge=1024)
    # Python's young-generation GC threshold for API processes (CPython's default: 700).
    gc_gen0_threshold: int = Field(default=20_000, ge=100)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    trusted_proxies: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)

    # argon2id, OWASP: m=19 MiB, t=2, p=1 is the documented minimum.
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    db_echo: bool = False

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    gzip_min_bytes: int = Field(default=1024, ge=0)
    page_limit_default: int = Field(default=50, ge=1)
    page_limit_max: int = Field(default=100, ge=1)
    catalog_cache_max_age: int = Field(default=60, ge=0)
    # Reload cached products/pages ahead of expiry, at jittered times (cache.py); off only
    # to measure what it fixes (bench/readtail.py).
    catalog_cache_refresh_ahead: bool = True
    catalog_product_ttl_seconds: float = Field(default=300.0, gt=0)

    reservation_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    idempotency_retention_hours: int = Field(default=24, ge=24)

    # Background work: the Procrastinate worker and the outbox relay (`shelfwise worker`).
    worker_concurrency: int = Field(default=4, ge=1)
    worker_poll_seconds: float = Field(default=2.0, gt=0)  # safety net behind LISTEN/NOTIFY
    worker_shutdown_timeout_seconds: float = Field(default=20.0, ge=0)
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0)
    # A worker silent for this long is presumed dead; its running jobs are re-queued.
    worker_stalled_after_seconds: float = Field(default=60.0, gt=0)
    worker_metrics_port: int | None = None
    jobs_stalled_check_cron: str = "* * * * *"
    # Extra modules whose tasks the worker registers (tests, plug-ins).
    jobs_extra_modules: list[str] = Field(default_factory=list)
    # Dead letters are POSTed here as JSON (short timeout; failures are only logged).
    jobs_alert_webhook_url: str | None = None
    jobs_alert_timeout_seconds: float = Field(default=2.0, gt=0)
    finished_jobs_retention_hours: int = Field(default=168, ge=1)
    relay_batch_size: int = Field(default=500, ge=1)
    relay_poll_seconds: float = Field(default=0.5, gt=0)
    outbox_retention_days: int = Field(default=7, ge=1)
    low_stock_threshold: int = Field(default=5, ge=0)

    # Event bus (docs/events.md): the worker publishes the stream to RabbitMQ when set.
    broker_url: str | None = None  # amqp://user:password@host:5672/vhost
    broker_exchange: str = "shelfwise.events"
    broker_batch_size: int = Field(default=500, ge=1)
    broker_window: int = Field(default=200, ge=1)  # unconfirmed messages in flight
    broker_poll_seconds: float = Field(default=0.5, gt=0)  # safety net behind NOTIFY
    broker_publisher_linger_ms: float = Field(default=20.0, ge=0)  # batch the relay's commits
    broker_backoff_max_seconds: float = Field(default=30.0, gt=0)
    broker_prefetch: int = Field(default=100, ge=1)  # `shelfwise consume`
    broker_delivery_limit: int = Field(default=5, ge=1)  # then dead-lettered
    # `shelfwise consume` claims and handles up to this many prefetched messages in one
    # transaction, waiting at most the linger for a batch to fill (1: one at a time).
    broker_consumer_batch_size: int = Field(default=50, ge=1)
    broker_consumer_linger_ms: float = Field(default=10.0, ge=0)
    broker_inbox_retention_days: int = Field(default=7, ge=1)  # prune_broker_inbox

    # Live updates (SSE, WebSocket, long-poll).
    live_heartbeat_seconds: float = Field(default=15.0, gt=0)
    live_recheck_seconds: float = Field(default=15.0, gt=0)  # re-authorize open streams
    live_window: int = Field(default=10_000, ge=100)  # events kept in memory for resumes
    live_queue_limit: int = Field(default=1_000, ge=10)  # per connection, then disconnect
    live_retry_ms: int = Field(default=3_000, ge=100)  # SSE `retry:` hint (jittered)
    live_feed_poll_seconds: float = Field(default=1.0, gt=0)  # feed safety-net poll
    rate_limit_live_connect: str = "120/minute"

    # Webhooks: SSRF allow-list (CIDRs; empty in production), timeouts, auto-disable.
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_read_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_disable_after_failures: int = Field(default=50, ge=1)
    webhook_fanout_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_fanout_batch_size: int = Field(default=200, ge=1)
    # Product images: streamed to <data_dir>/images, at most this many bytes.
    image_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # CSV imports: streamed to <data_dir>/imports, at most this many bytes.
    import_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)

    # Signals (docs/observability.md): event-loop lag, slow statements, pool leaks, debug.
    loop_lag_sample_seconds: float = Field(default=0.1, gt=0)
    loop_blocked_threshold_seconds: float = Field(default=0.5, gt=0)  # then the stack is logged
    db_slow_statement_ms: float = Field(default=250.0, ge=0)
    db_connection_held_warn_seconds: float = Field(default=30.0, gt=0)  # then: leaked?
    db_long_transaction_seconds: float = Field(default=60.0, gt=0)
    # /v1/admin/debug/*: None means on outside production, off in production.
    debug_endpoints_enabled: bool | None = None
    rate_limit_debug: str = "10/minute"
    debug_profile_max_seconds: int = Field(default=30, ge=1, le=300)

    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON in production, console otherwise
    access_log: bool = True

    @cached_property
    def instance_name(self) -> str:
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    def direct_url(self, main_url: str) -> str:
        """The DSN for session features: `direct_database_url`, else the main one."""
        return self.direct_database_url or main_url

    @model_validator(mode="after")
    def _refuse_pooling_without_direct_url(self) -> Settings:
        # LISTEN through a transaction pooler never hears a NOTIFY, and a session advisory
        # lock would be held by whichever server connection ran it: two relays at once.
        if self.db_transaction_pooling and not self.direct_database_url:
            raise ValueError("db_transaction_pooling needs SHELFWISE_DIRECT_DATABASE_URL")
        return self

    @cached_property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @cached_property
    def json_logs(self) -> bool:
        return self.is_production if self.log_json is None else self.log_json

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if not self.is_production:
            return self
        problems = [
            f"{name} is a development default"
            for name, value in (
                ("jwt_secret", self.jwt_secret),
                ("cursor_secret", self.cursor_secret),
                ("session_secret", self.session_secret),
                *(
                    (f"jwt_previous_keys[{kid}]", key)
                    for kid, key in self.jwt_previous_keys.items()
                ),
            )
            if value.get_secret_value().startswith(DEV_SECRET_PREFIX)
            or len(value.get_secret_value()) < 32
        ]
        if not self.database_url:
            problems.append("DATABASE_URL is required (no embedded database in production)")
        if self.db_echo:
            problems.append("db_echo logs SQL parameters")
        if self.broker_url and "//guest:guest@" in self.broker_url:
            problems.append("broker_url uses RabbitMQ's default guest account")
        if not self.cookie_secure:
            problems.append("cookie_secure must be on")
        if "*" in self.cors_origins:
            problems.append("CORS origins must be listed, not '*'")
        if problems:
            raise InsecureSettingsError("refusing to start in production: " + "; ".join(problems))
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build settings; `.env` is read only outside production."""
    env_file = None if os.environ.get("SHELFWISE_ENV") == Environment.PRODUCTION else ".env"
    return Settings(_env_file=env_file, **overrides)
