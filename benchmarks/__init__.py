"""SchemaHub benchmarks: every figure is a ratio to a baseline measured in the same run.

Run by hand: ``python -m benchmarks [NAME ...] [--quick]``. Never timed in tests.
"""
