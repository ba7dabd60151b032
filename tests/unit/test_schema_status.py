"""Readiness and the schema during a rolling release (docs/deploy.md, "Releasing").

Migrations run before the rollout, so the previous release's pods meet a schema that is
ahead of their code: they must stay ready (migrations are backward compatible), or every
old pod would leave the load balancer before a new one is ready. Behind is not ready."""

from __future__ import annotations

from shelfwise.migrate import head_revisions, known_revisions, schema_status


def test_at_this_release_head_is_ready() -> None:
    assert schema_status(set(head_revisions())) == "ok"


def test_ahead_of_this_release_is_ready() -> None:
    newer = "f00dfeedbeef"  # a revision a newer release wrote; these scripts do not know it
    assert newer not in known_revisions()
    assert schema_status({newer}) == "ok"


def test_behind_this_release_is_not_ready() -> None:
    older = sorted(known_revisions() - head_revisions())[0]
    assert schema_status({older}).startswith(f"at ['{older}'], expected")


def test_an_empty_database_is_not_ready() -> None:
    assert schema_status(set()).startswith("at nothing, expected")
