"""Test helpers for SchemaHub and for plugin authors (pytest-friendly, no pytest import needed)."""
