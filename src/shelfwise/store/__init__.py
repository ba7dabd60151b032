"""The persistence path for stock, orders, the ledger and their outbox events.

`unit.py` owns the transaction (one psycopg connection, retries, driver errors wrapped,
events flushed before commit, the relay woken after it); `sql.py` names every statement.
The aggregates' writers are `inventory/store.py` and `orders/store.py`: nothing else
writes `stock_levels`, `stock_movements`, `orders` or `order_lines`.
"""
