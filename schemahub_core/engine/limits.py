"""How much work one raw commit covers, whichever limit comes first (measured: docs/exactly-once.md).

A light module (no pyiceberg) so the CLI can show the defaults in its help without importing the engine.
A crash loses at most one uncommitted batch, which the rerun fetches again.
"""

MAX_ROWS_PER_COMMIT = 250_000
MAX_SECONDS_PER_COMMIT = 30.0
