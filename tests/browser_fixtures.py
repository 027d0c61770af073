"""Real-browser fixtures: Playwright for Python driving Debian's Chromium, headless.

Playwright's own browser downloads are never used (no ``playwright install``): the fixture launches the
system Chromium (``/usr/bin/chromium``, Debian package ``chromium``; ``SCHEMAHUB_CHROMIUM`` overrides),
and skips with a clear message only when none is found.

One browser for the session. Playwright's sync API keeps an asyncio loop running on the main thread while
it is open, which makes ``asyncio.run`` fail in any test that runs meanwhile; so the tests that use the
browser are moved to the end of the session (``pytest_collection_modifyitems``) and nothing else runs while
it is open. Screenshots go to ``test-artifacts/`` (gitignored; CI keeps it as the run's artifacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """The system Chromium: ``SCHEMAHUB_CHROMIUM``, then Debian's path, then ``chromium`` on PATH."""
    for candidate in (os.environ.get("SCHEMAHUB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests last (stable order otherwise): see the module docstring."""
    uses_browser = [i for i in items if "browser" in getattr(i, "fixturenames", ())]
    if uses_browser:
        others = [i for i in items if "browser" not in getattr(i, "fixturenames", ())]
        items[:] = others + uses_browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install -e '.[dev]'")
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium not found: install Debian's chromium (apt-get install chromium) "
                    "or set SCHEMAHUB_CHROMIUM to its path")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class BrowserPage:
    """A fresh page plus everything it logged: console errors and uncaught exceptions fail a test."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save ``test-artifacts/<name>.png`` and return its path."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def errors(self) -> list[str]:
        return self.console_errors + self.page_errors


@pytest.fixture
def web_page(browser: Any) -> Iterator[BrowserPage]:
    """A page in its own browser context (no state shared between tests), 1400x1000."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(30_000)  # generous: a busy 2-core machine parses plotly.js slowly
    bp = BrowserPage(page)
    page.on("console", lambda msg: bp.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: bp.page_errors.append(str(exc)))
    page.on("request", lambda req: bp.requests.append(req.url))
    try:
        yield bp
    finally:
        context.close()
