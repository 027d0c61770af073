"""Pytest fixtures that run the simulated venues in-process on a free port of 127.0.0.1.

Use them from a ``conftest.py``::

    from schemahub_core.testing.sandbox import sandbox, sandbox_factory  # noqa: F401

``sandbox`` is one server for the whole test session, with limits high enough
never to slow a test down; ``sandbox_factory(SandboxConfig(...))`` starts a
dedicated one (e.g. with small rate limits) that stops when the test ends.
Point a connector at either with ``connector_cls(sandbox.connector_options(name))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from schemahub_core.sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The shared sandbox (fast limits). Faults queued by a test are cleared after it."""
    server = Sandbox(SandboxConfig.fast()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _clear_sandbox_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").faults.clear()


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[[SandboxConfig], Sandbox]]:
    """Start dedicated sandboxes with a chosen config; each is stopped after the test."""
    started: list[Sandbox] = []

    def start(config: SandboxConfig) -> Sandbox:
        server = Sandbox(config).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
