"""Drills: make one classic failure happen on a local Shelfwise and show its signal
(`shelfwise drill --list`, docs/drills.md)."""
