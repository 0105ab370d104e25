"""The browser tests' fixtures live in tests/support/browser.py (registered for the whole run
in tests/conftest.py); the helpers the tests import are re-exported here."""

from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, shot

__all__ = ["ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "shot"]
