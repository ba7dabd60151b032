"""Settings: production refuses insecure configuration; env aliases work."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from shelfwise.config import DEV_SECRET_PREFIX, Environment, Settings

GOOD_JWT = "j" * 32
GOOD_CURSOR = "c" * 48
GOOD_SESSION = "s" * 40
DB = "postgresql://shelfwise@db.internal:5432/shelfwise"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the process environment; start every test from a clean one."""
    for name in list(os.environ):
        if name.startswith("SHELFWISE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


def make(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": Environment.PRODUCTION,
        "jwt_secret": GOOD_JWT,
        "cursor_secret": GOOD_CURSOR,
        "session_secret": GOOD_SESSION,
        "database_url": DB,
    }
    values.update(overrides)
    return make(**values)


def test_development_defaults_are_accepted_outside_production() -> None:
    settings = make()
    assert settings.env is Environment.DEVELOPMENT
    assert settings.jwt_secret.get_secret_value().startswith(DEV_SECRET_PREFIX)
    assert settings.database_url is None
    assert settings.is_production is False
    assert settings.json_logs is False


def test_good_production_settings_are_accepted() -> None:
    settings = production()
    assert settings.is_production is True
    assert settings.json_logs is True  # JSON logs by default in production
    assert settings.jwt_secret.get_secret_value() == GOOD_JWT
    assert settings.database_url == DB


def test_secrets_are_not_shown_in_repr() -> None:
    settings = production()
    assert GOOD_JWT not in repr(settings)
    assert GOOD_CURSOR not in str(settings)


@pytest.mark.parametrize("field", ["jwt_secret", "cursor_secret", "session_secret"])
def test_production_refuses_development_secrets(field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field} is a development default"):
        production(**{field: DEV_SECRET_PREFIX + "x" * 40})


def test_production_refuses_the_built_in_defaults() -> None:
    with pytest.raises(ValidationError) as caught:
        make(env=Environment.PRODUCTION, database_url=DB)
    message = str(caught.value)
    assert "jwt_secret is a development default" in message
    assert "cursor_secret is a development default" in message


@pytest.mark.parametrize("field", ["jwt_secret", "cursor_secret", "session_secret"])
def test_production_refuses_short_secrets(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        production(**{field: "s" * 31})
    assert production(**{field: "s" * 32})  # 32 characters is the minimum


def test_production_requires_database_url() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL is required"):
        production(database_url=None)
    with pytest.raises(ValidationError, match="DATABASE_URL is required"):
        production(database_url="")


def test_production_refuses_db_echo() -> None:
    with pytest.raises(ValidationError, match="db_echo"):
        production(db_echo=True)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ValidationError) as caught:
        make(env=Environment.PRODUCTION, jwt_secret="short", db_echo=True)
    message = str(caught.value)
    for expected in ("jwt_secret", "cursor_secret", "DATABASE_URL", "db_echo"):
        assert expected in message


def test_development_and_test_allow_what_production_refuses() -> None:
    for env in (Environment.DEVELOPMENT, Environment.TEST):
        settings = make(env=env, jwt_secret="short", db_echo=True)
        assert settings.db_echo is True


def test_production_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFWISE_ENV", "production")
    monkeypatch.setenv("SHELFWISE_JWT_SECRET", GOOD_JWT)
    monkeypatch.setenv("SHELFWISE_CURSOR_SECRET", GOOD_CURSOR)
    monkeypatch.setenv("SHELFWISE_SESSION_SECRET", GOOD_SESSION)
    monkeypatch.setenv("DATABASE_URL", DB)
    assert make().is_production
    monkeypatch.setenv("SHELFWISE_JWT_SECRET", DEV_SECRET_PREFIX + "x" * 40)
    with pytest.raises(ValidationError, match="jwt_secret"):
        make()


def test_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain@host/db")
    assert make().database_url == "postgresql://plain@host/db"


def test_prefixed_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFWISE_DATABASE_URL", "postgresql://prefixed@host/db")
    assert make().database_url == "postgresql://prefixed@host/db"


def test_redis_url_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    assert make().redis_url == "redis://cache:6379/0"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("SHELFWISE_REDIS_URL", "redis://cache:6379/1")
    assert make().redis_url == "redis://cache:6379/1"


def test_init_kwargs_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env@host/db")
    assert make(database_url=DB).database_url == DB


def test_numeric_bounds_are_enforced() -> None:
    with pytest.raises(ValidationError, match="argon2_memory_kib"):
        make(argon2_memory_kib=1024)
    with pytest.raises(ValidationError, match="access_token_ttl_seconds"):
        make(access_token_ttl_seconds=10)
    with pytest.raises(ValidationError, match="max_body_bytes"):
        make(max_body_bytes=10)


def test_production_refuses_insecure_cookies_and_wildcard_cors() -> None:
    with pytest.raises(ValidationError, match="cookie_secure"):
        production(cookie_secure=False)
    with pytest.raises(ValidationError, match="CORS"):
        production(cors_origins=["*"])


def test_previous_jwt_keys_are_checked_too() -> None:
    with pytest.raises(ValidationError, match=r"jwt_previous_keys\[old\]"):
        production(jwt_previous_keys={"old": "short"})
    assert production(jwt_previous_keys={"old": "o" * 32}).jwt_previous_keys
