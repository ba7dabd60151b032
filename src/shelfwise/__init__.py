"""Shelfwise: a real-time inventory and order service."""

__version__ = "0.1.0"
