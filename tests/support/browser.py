"""The browser fixtures, for every test package (one Playwright driver per run: the sync API
allows one at a time, so a second set of session fixtures elsewhere would fail). Playwright over
Debian's Chromium (never a downloaded browser: no test reaches the internet); a missing
/usr/bin/chromium fails as a broken set-up.

Every page is watched for JavaScript errors and console errors (a Content-Security-Policy
violation shows up there), and a test fails if any appeared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """One Playwright driver per session (the sync API allows one at a time)."""
    # make test installs both (apt-get chromium, pip playwright): a missing one is a broken
    # set-up, reported as such rather than passed over
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run `make system-deps` (apt-get install -y chromium)",
                    pytrace=False)
    from playwright import sync_api
    sync_api.expect.set_options(timeout=10_000)   # room for a loaded machine; nothing waits this long when well
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Any) -> Iterator[Any]:
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield b
    b.close()


class PageErrors(list):
    """JavaScript errors and console errors seen on a page."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN",
                              timezone_id="Asia/Shanghai")
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
          if msg.type == "error" and not _expected_console(msg.text) else None)
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()
    assert not errors, f"errors on the page: {errors}"


def _expected_console(text: str) -> bool:
    """The browser logs every non-2xx fetch as an error; the tests provoke some on purpose."""
    return "Failed to load resource" in text


def shot(pg: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ for a human to look at; fail if the
    page is wider than the window (something overflows: a sideways scroll on a kiosk)."""
    overflow = pg.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path
