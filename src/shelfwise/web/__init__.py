"""The live dashboard: one HTML page and plain ES modules, no build step (docs/live.md)."""
