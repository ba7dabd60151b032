"""Streamed uploads: product images."""
