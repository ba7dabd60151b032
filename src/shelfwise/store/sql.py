"""Every statement that writes stock, orders, the ledger and their events, by name.

Fixed strings (psycopg `%(name)s` parameters, never formatted with input), kept in one
file so a reviewer sees the whole write surface of the inventory core at once, and
`tests/integration/test_query_plans.py` can EXPLAIN them by name. Array parameters
(`= ANY(%s)`, `unnest`) keep each text the same for 1 row or 1,000, so psycopg prepares
it once per connection.
"""

from __future__ import annotations

from typing import Final, LiteralString

# -- outbox ------------------------------------------------------------------------------

# Events in the order given (WITH ORDINALITY): ids, hence positions, follow it.
INSERT_EVENTS: Final[LiteralString] = """\
INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, version,
                           trace_context)
SELECT e.type, e.aggregate_type, e.aggregate_id, e.payload, e.version, e.trace_context
  FROM unnest(%(types)s::text[], %(aggregate_types)s::text[], %(aggregate_ids)s::text[],
              %(payloads)s::jsonb[], %(versions)s::smallint[], %(trace_contexts)s::jsonb[])
       WITH ORDINALITY
       AS e(type, aggregate_type, aggregate_id, payload, version, trace_context, n)
 ORDER BY e.n
"""

# -- stock levels ------------------------------------------------------------------------

# Creates the level of an existing product at an existing location; says which exist.
ENSURE_LEVEL: Final[LiteralString] = """\
WITH product AS (SELECT id FROM products WHERE id = %(product_id)s),
     location AS (SELECT id FROM locations WHERE id = %(location_id)s),
     created AS (
         INSERT INTO stock_levels (product_id, location_id)
         SELECT product.id, location.id FROM product, location
         ON CONFLICT (product_id, location_id) DO NOTHING
     )
SELECT EXISTS (SELECT 1 FROM product), EXISTS (SELECT 1 FROM location)
"""

# Row locks in ascending id: the global lock order of every multi-level writer, so two
# transactions can never wait on each other in a cycle.
LOCK_LEVELS: Final[LiteralString] = """\
SELECT id, product_id, location_id, on_hand, reserved, version, updated_at
  FROM stock_levels WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
"""

LOCK_LEVELS_AT: Final[LiteralString] = """\
SELECT s.id, s.product_id, s.location_id, s.on_hand, s.reserved, s.version, s.updated_at
  FROM unnest(%(product_ids)s::uuid[], %(location_ids)s::uuid[]) AS v(product_id, location_id)
  JOIN stock_levels AS s ON s.product_id = v.product_id AND s.location_id = v.location_id
 ORDER BY s.id FOR UPDATE OF s
"""

# A read, for the daily low-stock report (`inventory/low_stock.py`): levels under a
# threshold. A scan of every level by nature (as the INSERT ... SELECT it replaced), so
# not among the indexed statements `tests/integration/test_query_plans.py` checks.
LEVELS_BELOW: Final[LiteralString] = """\
SELECT id, product_id, location_id, on_hand, reserved, version, updated_at
  FROM stock_levels WHERE on_hand - reserved < %(threshold)s ORDER BY id
"""

# The levels are locked by this transaction already: set the counters the domain
# computed, and append their ledger rows, in one statement.
WRITE_LEVELS: Final[LiteralString] = """\
WITH moved AS (
    UPDATE stock_levels AS s
       SET on_hand = v.on_hand, reserved = v.reserved, version = s.version + 1,
           updated_at = now()
      FROM unnest(%(ids)s::bigint[], %(on_hands)s::int[], %(reserveds)s::int[])
           AS v(id, on_hand, reserved)
     WHERE s.id = v.id
    RETURNING s.id, s.version, s.updated_at
), ledger AS (
    INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,
                                 on_hand_delta, reserved_delta, reason, reference,
                                 order_id, actor_id)
    SELECT m.level_id, m.product_id, m.location_id, m.kind, m.on_hand_delta,
           m.reserved_delta, m.reason, m.reference, m.order_id, %(actor_id)s
      FROM unnest(%(m_level_ids)s::bigint[], %(m_product_ids)s::uuid[],
                  %(m_location_ids)s::uuid[], %(m_kinds)s::text[], %(m_on_hand)s::int[],
                  %(m_reserved)s::int[], %(m_reasons)s::text[], %(m_references)s::text[],
                  %(m_order_ids)s::uuid[]) WITH ORDINALITY
           AS m(level_id, product_id, location_id, kind, on_hand_delta, reserved_delta,
                reason, reference, order_id, n)
     ORDER BY m.n
    RETURNING id, stock_level_id, product_id, location_id, kind, on_hand_delta,
              reserved_delta, reason, reference, actor_id, order_id, created_at
)
SELECT l.id, l.stock_level_id, l.product_id, l.location_id, l.kind, l.on_hand_delta,
       l.reserved_delta, l.reason, l.reference, l.actor_id, l.order_id, l.created_at,
       moved.version, moved.updated_at
  FROM ledger AS l JOIN moved ON moved.id = l.stock_level_id
 ORDER BY l.id
"""

# -- orders ------------------------------------------------------------------------------

# `%(owner)s` NULL: the caller sees every order (`orders:manage`); else only its own.
LOCK_ORDER: Final[LiteralString] = """\
SELECT id, status, placed_by_user_id, placed_by_api_key_id, currency, total_minor,
       expires_at, version, created_at, updated_at
  FROM orders
 WHERE id = %(id)s
   AND (%(owner_user)s::uuid IS NULL OR placed_by_user_id = %(owner_user)s)
   AND (%(owner_key)s::uuid IS NULL OR placed_by_api_key_id = %(owner_key)s)
   FOR UPDATE
"""

# Concurrent expirers take disjoint batches; an order being confirmed now is skipped.
LOCK_EXPIRED_ORDERS: Final[LiteralString] = """\
SELECT id, status, placed_by_user_id, placed_by_api_key_id, currency, total_minor,
       expires_at, version, created_at, updated_at
  FROM orders
 WHERE status = 'reserved' AND expires_at <= %(now)s
 ORDER BY expires_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
"""

ORDER_LINES: Final[LiteralString] = """\
SELECT order_id, product_id, location_id, stock_level_id, quantity, unit_price_minor, currency
  FROM order_lines WHERE order_id = ANY(%(ids)s) ORDER BY id
"""

SET_ORDER_STATUS: Final[LiteralString] = """\
UPDATE orders SET status = %(status)s, version = version + 1, updated_at = %(now)s
 WHERE id = ANY(%(ids)s)
RETURNING id, status, placed_by_user_id, placed_by_api_key_id, currency, total_minor,
          expires_at, version, created_at, updated_at
"""
