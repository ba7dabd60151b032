"""Demo and benchmark data. Idempotent: a second run changes nothing.

Stock is seeded as ledger `receipt` movements written together with the levels, so a
freshly seeded database already reconciles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.models import Product
from shelfwise.identity import service as identity
from shelfwise.identity.models import Role, User
from shelfwise.identity.passwords import PasswordHasher


@dataclass(frozen=True, slots=True)
class DemoLogin:
    email: str
    password: str
    role: Role


# Development-only credentials, printed by `make run`. Production never seeds.
DEMO_LOGINS = (
    DemoLogin("admin@shelfwise.local", "admin-demo-password", Role.ADMIN),
    DemoLogin("staff@shelfwise.local", "staff-demo-password", Role.STAFF),
    DemoLogin("customer@shelfwise.local", "customer-demo-password", Role.CUSTOMER),
)
DEMO_LOCATIONS = (
    ("WH-NORTH", "North warehouse", "warehouse"),
    ("WH-SOUTH", "South warehouse", "warehouse"),
    ("STORE-CENTRAL", "Central store", "store"),
)
CATEGORIES = ("kitchen", "garden", "office", "toys", "outdoor", "lighting", "bath", "tools")
ADJECTIVES = (
    "Red",
    "Blue",
    "Oak",
    "Steel",
    "Linen",
    "Compact",
    "Large",
    "Classic",
    "Smart",
    "Bamboo",
    "Ceramic",
    "Vintage",
)
NOUNS = (
    "Mug",
    "Lamp",
    "Chair",
    "Shelf",
    "Kettle",
    "Planter",
    "Notebook",
    "Drill",
    "Towel",
    "Tent",
    "Puzzle",
    "Clock",
    "Basket",
    "Rug",
)


async def seed_users(session: AsyncSession, hasher: PasswordHasher) -> int:
    created = 0
    for login in DEMO_LOGINS:
        async with session.begin():
            exists = await session.scalar(select(User.id).where(User.email == login.email))
        if exists is None:
            await identity.create_user(
                session,
                hasher,
                email=login.email,
                password=login.password,
                full_name=f"Demo {login.role.value}",
                role=login.role,
            )
            created += 1
    return created


async def seed_catalog(session: AsyncSession, *, products: int, seed: int = 42) -> int:
    """Locations, `products` products and a receipt of stock for each in every location."""
    rng = random.Random(seed)  # noqa: S311 (demo data, reproducible on purpose)
    async with session.begin():
        existing = await session.scalar(select(func.count()).select_from(Product)) or 0
        await session.execute(
            text(
                "INSERT INTO locations (code, name, kind) VALUES (:code, :name, :kind) "
                "ON CONFLICT (code) DO NOTHING"
            ),
            [dict(code=c, name=n, kind=k) for c, n, k in DEMO_LOCATIONS],
        )
        missing = max(products - existing, 0)
        if missing:
            rows = [
                {
                    "sku": f"SKU-{i:06d}",
                    "name": f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {i}",
                    "description": "Demo product",
                    "category": rng.choice(CATEGORIES),
                    "price_minor": rng.randrange(199, 49_999),
                    "currency": "EUR",
                }
                for i in range(existing + 1, existing + missing + 1)
            ]
            await session.execute(insert(Product), rows)
            # One set-based statement per table: levels for the new products, then their
            # receipts in the ledger, so on_hand equals the ledger sum from the start.
            await session.execute(
                text("""
                INSERT INTO stock_levels (product_id, location_id, on_hand)
                SELECT p.id, l.id, 20 + (abs(hashtextextended(p.sku || l.code, :seed)) % 180)
                FROM products p CROSS JOIN locations l
                WHERE p.sku = ANY(:skus)
                ON CONFLICT (product_id, location_id) DO NOTHING
            """),
                {"seed": seed, "skus": [r["sku"] for r in rows]},
            )
            await session.execute(
                text("""
                INSERT INTO stock_movements
                    (stock_level_id, product_id, location_id, kind, on_hand_delta, reason)
                SELECT s.id, s.product_id, s.location_id, 'receipt', s.on_hand, 'seed'
                FROM stock_levels s JOIN products p ON p.id = s.product_id
                WHERE p.sku = ANY(:skus) AND s.on_hand > 0
            """),
                {"skus": [r["sku"] for r in rows]},
            )
    return missing
