"""Bursts of concurrent requests from a test, whatever the test process is already running.

Playwright's sync API (tests/browser, a session-scoped fixture) keeps an asyncio loop on the
main thread for the rest of the session, so `asyncio.run` there fails in every later test;
a burst gets a fresh loop on a thread of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_burst(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `make()` returns to its end on a new event loop in its own thread."""
    with ThreadPoolExecutor(1, thread_name_prefix="burst") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
