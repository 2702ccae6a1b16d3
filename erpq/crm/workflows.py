"""Workflows (being written)."""
