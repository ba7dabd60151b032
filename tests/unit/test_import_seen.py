"""The compact seen-keys table that finds duplicate rows in an import."""

from __future__ import annotations

from shelfwise.imports.seen import SeenKeys


def test_each_key_is_new_once_and_stays_known_across_growth() -> None:
    seen = SeenKeys(capacity=4)
    keys = [f"SKU-{n}\0NORTH" for n in range(10_000)]  # grows 4 -> 32768 slots
    assert all(seen.add(key) for key in keys)
    assert len(seen) == len(keys)
    assert not any(seen.add(key) for key in keys)
    assert len(seen) == len(keys)
    assert seen.add("SKU-0\0SOUTH")  # same SKU, another location: a different key


def test_eight_bytes_a_slot_at_most_half_full() -> None:
    seen = SeenKeys(capacity=4)
    for n in range(1000):
        seen.add(str(n))
    assert seen.memory_bytes() == 8 * 2048  # 1000 keys: first power of two over 2000
