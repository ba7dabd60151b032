"""Scopes are the one currency of authorization.

Users get scopes from their role; API keys carry an explicit subset. Endpoints ask for a
scope, so one check covers both kinds of caller. Admin-only functions (users, API keys)
additionally require the admin *role*, which API keys never have.
"""

from __future__ import annotations

from enum import StrEnum

from shelfwise.identity.models import Role


class Scope(StrEnum):
    CATALOG_READ = "catalog:read"
    CATALOG_WRITE = "catalog:write"
    STOCK_READ = "stock:read"
    STOCK_WRITE = "stock:write"
    LEDGER_READ = "ledger:read"
    ORDERS_READ = "orders:read"  # own orders
    ORDERS_WRITE = "orders:write"  # place, confirm and cancel own orders
    ORDERS_MANAGE = "orders:manage"  # every order: read, act on, fulfil


ALL_SCOPES = frozenset(Scope)

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.CUSTOMER: frozenset(
        {Scope.CATALOG_READ, Scope.STOCK_READ, Scope.ORDERS_READ, Scope.ORDERS_WRITE}
    ),
    Role.STAFF: ALL_SCOPES,
    Role.ADMIN: ALL_SCOPES,
}
