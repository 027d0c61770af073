"""Test-only fault injection, read in this one place: ``SCHEMAHUB_TEST_FAULT``.

Exactly-once is a claim about crashes, so the tests crash real processes at the
exact places that matter. The engines call ``fault_point(name)`` there:

- ``ingest.before-commit`` / ``unify.before-commit`` / ``quarantine.before-commit`` / ``repair.before-commit``:
  the data files and manifests are written, the catalog commit has not happened;
- ``ingest.after-commit`` / ``unify.after-commit`` / ``quarantine.after-commit`` / ``repair.after-commit``:
  the catalog has the new snapshot, the engine has not seen the response yet;
- ``unify.staged``: one more part of a unify run is written as data files that no
  snapshot references yet (reached once per part, before ``unify.before-commit``).

``SCHEMAHUB_TEST_FAULT=<point>:<n>[:<action>][,...]`` fires at the ``n``-th time
``point`` is reached in this process. Actions: ``kill`` (SIGKILL itself, the
default), ``raise`` (a lost response: ``InjectedFault``, a ``ConnectionError``,
whose outcome the engine must treat as unknown), ``sleep=<seconds>`` (stall,
to open a race window for a concurrent writer), ``wait=<path>`` (create ``<path>.reached``, then block
until ``<path>`` exists: a race made deterministic, the test decides when the writer goes on) and
``errno=<n>`` (an ``OSError`` with that errno, as the
file system raises it: 30 read-only, 28 disk full; for storage-failure tests where a real read-only or full
file system cannot be mounted). Unset, it costs one lookup.

Points beyond the commits: ``watermarks.before-write`` (``rebuild_watermarks`` has computed the mirror);
``compact.before-commit`` / ``compact.after-commit`` and ``backfill.before-commit`` / ``backfill.after-commit``
around a maintenance rewrite's swap of files (the rewritten files are written before it);
the Spark unify engine's ``spark.mapped`` (the driver has the mapped rows' day counts, nothing is written) and
``spark.task`` (on an executor: one task's data files are written; a kill there is a lost executor).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

ENV = "SCHEMAHUB_TEST_FAULT"

_reached: Counter[str] = Counter()


class InjectedFault(ConnectionError):
    """A fault raised on purpose: the commit's outcome is unknown to the caller."""


def reset() -> None:
    """Forget how often each point was reached (for in-process tests)."""
    _reached.clear()


def fault_point(name: str) -> None:
    """Fire the fault configured for ``name`` if this is its ``n``-th arrival."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _reached[name] += 1
    for item in spec.split(","):
        point, _, rest = item.strip().partition(":")
        count, _, action = rest.partition(":")
        if point != name or int(count or 1) != _reached[name]:
            continue
        if action in ("", "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise InjectedFault(f"injected fault at {name} #{_reached[name]}")
        elif action.startswith("errno="):
            number = int(action.split("=", 1)[1])
            raise OSError(number, f"{os.strerror(number)} (injected by {ENV} at {name})")
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
        elif action.startswith("wait="):
            gate = Path(action.split("=", 1)[1])
            Path(f"{gate}.reached").touch()
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} (kill, raise, sleep=<seconds>, wait=<path>, errno=<n>)")
