"""Which keys (SKU, or SKU and location) a file has already used, in 8 bytes per key.

A `set` of the keys themselves costs about 110 MB for a million SKUs, a third of the
worker's memory budget. This open-addressing table keeps only each key's 64-bit hash:
16 MB at a million keys (the table doubles at half full). Python's `hash` of a `str`
is SipHash keyed at random per process, so no file can be crafted to collide; a chance
collision would refuse a row as a duplicate with probability about n²/2⁶⁵ — roughly
one in 37 million for a million-row file.
"""

from __future__ import annotations

from array import array

_EMPTY = 0


class SeenKeys:
    def __init__(self, capacity: int = 1 << 12) -> None:
        self._slots = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        return len(self._slots) * self._slots.itemsize

    def add(self, key: str) -> bool:
        """Record `key`; False if it was already there."""
        if not self._insert(hash(key) or 1):
            return False
        self._count += 1
        if self._count * 2 > len(self._slots):
            self._grow()
        return True

    def _insert(self, h: int) -> bool:
        slots, mask = self._slots, self._mask
        i = h & mask
        while (current := slots[i]) != _EMPTY:
            if current == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        for h in old:
            if h != _EMPTY:
                self._insert(h)
