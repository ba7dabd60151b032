"""Rolling restart under load, through nginx: each API instance in turn gets SIGTERM and is
started again while clients read the catalog, place keyed orders and adjust stock.

What must hold: no client sees a 5xx or a connection error (nginx skips an instance that
refuses or drops a connection, and retries only requests that are safe to retry: reads and
keyed writes); every order a client saw succeed exists exactly once; the ledger reconciles.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster_support import running_cluster
from tests.e2e.cluster_load import LOAD_APP_ENV, open_shop, orders_per_id, reconcile, steady_load

pytestmark = pytest.mark.e2e


async def test_rolling_restart_under_load_drops_nothing(database_url: str, tmp_path: Path) -> None:
    async with running_cluster(database_url, tmp_path, apis=3, app_env=LOAD_APP_ENV) as cluster:
        async with cluster.client(timeout=20.0) as client:
            shop = await open_shop(client, database_url)
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(client, shop, stop))
            try:
                for name in cluster.apis:
                    assert await cluster.restart(name) == 0, cluster.log(name)[-2000:]
            finally:
                stop.set()
                report = await load
        print(dict(report.statuses))
        assert report.failures == [], report.failures[:10]
        assert report.total > 100  # the load really ran across the restarts
        assert len(report.orders) > 20
        counts = orders_per_id(cluster.direct_url, list(report.orders.values()))
        assert set(counts) == set(report.orders.values())  # every order a client saw
        assert set(counts.values()) == {1}  # once
        checked = await asyncio.to_thread(reconcile, cluster.direct_url)
        assert checked.returncode == 0, checked.stdout + checked.stderr
