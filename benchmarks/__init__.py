"""SchemaHub benchmarks: every figure is a ratio to a baseline measured in the same run.

Run by hand: ``python -m benchmarks [NAME ...] [--quick]``. Never timed in tests.
"""

# first, as in every SchemaHub process: the core picks the memory allocator users get before pyarrow loads
import schemahub_core  # noqa: F401
