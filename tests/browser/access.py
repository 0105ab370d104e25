"""How the browser tests get a kiosk screen and an operator console, the way people do
(#20.1, ADR 0130): no token in any URL. A kiosk screen is paired once with an admin's
one-time code typed on it; an operator logs in with an account's id and password."""

from __future__ import annotations

from typing import Any

PASSWORD = "browser test password"


def pair_kiosk(page: Any, ls: Any, device: str = "kiosk-1") -> None:
    """Open /kiosk as a fresh screen (any earlier pairing forgotten) and pair it as `device`."""
    code = ls.core.accounts.create_pairing(device, actor="test-admin")
    page.goto(ls.base_url + "/kiosk")
    page.evaluate("() => localStorage.removeItem('ps.token.kiosk')")
    page.reload()
    page.fill("#pair-code", code)
    page.click("#pair button[type=submit]")
    page.wait_for_selector("#entry:not(.hidden)")
    page.wait_for_selector("#pair.hidden", state="attached")
    assert "token" not in page.url


def log_in(page: Any, ls: Any, operator_id: str = "op-1", role: str = "admin", password: str = PASSWORD) -> None:
    """Log in to /operator as `operator_id` (made with `role` when it does not exist yet)."""
    if not any(o.id == operator_id for o in ls.core.accounts.all()):
        ls.core.accounts.add(operator_id, role, password, actor="test")
    page.goto(ls.base_url + "/operator")
    page.fill("#l-id", operator_id)
    page.fill("#l-password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#console:not(.hidden)")
