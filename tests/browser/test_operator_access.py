"""Operator login, sessions and kiosk pairing in a real browser (#20.1, ADR 0130): the
console logs in and out, a viewer sees no admin controls and is refused their calls, a
revoked or idle session brings the login form back while another one stays, a kiosk
screen pairs with the code an admin's console shows and is sent back to pairing when
revoked, and a page on another origin cannot act with the operator's cookie."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.browser.access import log_in
from tests.support.stack import LiveStation, wait_until


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _new_page(browser: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    return ctx.new_page()


def _events(ls: LiveStation, event_type: str) -> list[dict[str, Any]]:
    return ls.core.ctx.store.query("SELECT * FROM events WHERE type = ? ORDER BY seq", (event_type,))


def _sections(**operators: float) -> dict[str, dict[str, Any]]:
    return {"api": {"service_tokens": False}, "operators": dict(operators)}


def test_the_console_logs_in_and_out_and_a_viewer_gets_no_admin_powers(tmp_path: Path, page: Any,
                                                                        browser: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True, sections=_sections()) as ls:
        page.goto(ls.base_url + "/operator")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#console")).to_be_hidden()
        ls.core.accounts.add("ada", "admin", "browser test password", actor="test")
        page.fill("#l-id", "ada")
        page.fill("#l-password", "not the password")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_have_attribute("data-code", "wrong_password")
        log_in(page, ls, "ada")
        expect(page.locator("#who")).to_contain_text("ada (admin)")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("#access-panel")).to_be_visible()
        assert "token" not in page.url and "session" not in page.url
        # the session id is out of reach of the page's scripts (HttpOnly)
        assert "ps_session" not in page.evaluate("() => document.cookie")

        viewer = _new_page(browser)
        log_in(viewer, ls, "vic", role="viewer")
        expect(viewer.locator("#who")).to_contain_text("vic (viewer)")
        expect(viewer.locator("#access-panel")).to_be_hidden()
        expect(viewer.locator("#courier-form")).to_be_hidden()
        status = viewer.evaluate("""async () => (await fetch('/api/operator/kiosks/k9/pairing',
                                     {method: 'POST'})).status""")
        assert status == 403
        assert _events(ls, "kiosk.pairing.created") == []

        page.click("#logout")
        expect(page.locator("#login")).to_be_visible()
        page.reload()
        expect(page.locator("#login")).to_be_visible()
        assert [e["actor"] for e in _events(ls, "operator.logout")] == ["ada"]
        viewer.click("#verify")                                   # the other session is untouched
        expect(viewer.locator("#chain")).to_have_attribute("data-ok", "true")
        viewer.context.close()


def test_a_revoked_session_and_an_idle_one_get_the_login_form_back(tmp_path: Path, page: Any, browser: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True, sections=_sections()) as ls:
        log_in(page, ls, "ada")
        other = _new_page(browser)
        log_in(other, ls, "ada")
        mine = page.evaluate("async () => (await (await fetch('/api/operator/me')).json()).session")
        theirs = other.evaluate("async () => (await (await fetch('/api/operator/me')).json()).session")
        page.click("#access-panel summary")
        page.click(f'#op-sessions [data-session="{theirs}"] button')
        wait_until(lambda: len(_events(ls, "operator.session.revoked")) == 1)
        other.click("#verify")
        expect(other.locator("#login")).to_be_visible()
        expect(other.locator("#no-token")).to_be_visible()
        other.context.close()
        page.click("#verify")                                     # mine stays valid
        expect(page.locator("#chain")).to_have_attribute("data-ok", "true")
        assert _events(ls, "operator.session.expired") == []

        # idle: a short idle time injected into the running station's configuration; the
        # page's own timers keep polling, yet the session ends when nobody acts
        idle = 2.0
        ctx = ls.core.ctx
        ctx.config = ctx.config.model_copy(update={
            "operators": ctx.config.operators.model_copy(update={"session_idle_s": idle})})
        page.click("#verify")
        expect(page.locator("#chain")).to_have_attribute("data-ok", "true")
        last_act = time.monotonic()
        wait_until(lambda: time.monotonic() > last_act + idle + 0.5, idle + 5)
        page.click("#verify")
        expect(page.locator("#login")).to_be_visible()
        expired = _events(ls, "operator.session.expired")
        assert len(expired) == 1 and mine in expired[0]["data"] and "idle" in expired[0]["data"]


def test_a_kiosk_screen_pairs_with_the_code_the_admin_console_shows(tmp_path: Path, page: Any, browser: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True, sections=_sections()) as ls:
        log_in(page, ls, "ada")
        page.click("#access-panel summary")
        page.fill("#p-device", "kiosk-7")
        page.click("#pair-form button[type=submit]")
        code = page.locator("#pair-code-value").inner_text()
        assert len(code) == 10

        kiosk = _new_page(browser)
        kiosk.goto(ls.base_url + "/kiosk")
        expect(kiosk.locator("#pair")).to_be_visible()
        expect(kiosk.locator("#entry")).to_be_hidden()
        kiosk.fill("#pair-code", "WRONGCODE1")
        kiosk.click("#pair button[type=submit]")
        expect(kiosk.locator("#pair-error")).to_have_attribute("data-code", "wrong_pairing_code")
        kiosk.fill("#pair-code", code)
        kiosk.click("#pair button[type=submit]")
        expect(kiosk.locator("#entry")).to_be_visible()
        expect(kiosk.locator("#pair")).to_be_hidden()
        kiosk.fill("#display", "1-1-01-00000000")                 # the kiosk's calls are accepted
        kiosk.click("#key-ok")
        expect(kiosk.locator("#message")).to_have_attribute("data-code", "wrong_code")

        page.click("#access-panel summary")                       # close and open: reloads the list
        page.click("#access-panel summary")
        page.click('#kiosks [data-kiosk="kiosk-7"] button')
        wait_until(lambda: len(_events(ls, "kiosk.revoked")) == 1)
        kiosk.click('#keypad button[data-key="clear"]')
        kiosk.fill("#display", "1-1-01-00000000")
        kiosk.click("#key-ok")
        expect(kiosk.locator("#pair")).to_be_visible()            # back to pairing
        assert kiosk.evaluate("() => localStorage.getItem('ps.token.kiosk')") is None
        kiosk.context.close()


EVIL = """<!doctype html><html><body>
<form id="f" method="POST" action="{station}/api/operator/sessions/revoke-all" enctype="text/plain">
<input name='{{"a":"' value='"}}'></form>
<script>
fetch("{station}/api/operator/kiosks/kiosk-9/pairing", {{method: "POST", mode: "no-cors", credentials: "include"}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


def test_a_page_on_another_origin_cannot_act_with_the_operator_cookie(tmp_path: Path, page: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True, sections=_sections()) as ls:
        log_in(page, ls, "ada")
        body = EVIL.format(station=ls.base_url).encode()

        class Evil(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        # the same host on another port: the same *site* (SameSite lets the cookie go), another
        # *origin*, which the station's Origin check refuses
        server = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            evil = page.context.new_page()
            evil.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            expect(evil.locator("body")).to_contain_text("cross_site_refused")   # the form's answer
            evil.close()
        finally:
            server.shutdown()
        assert _events(ls, "kiosk.pairing.created") == []
        assert _events(ls, "operator.session.revoked") == []
        page.click("#verify")                                     # the console still works
        expect(page.locator("#chain")).to_have_attribute("data-ok", "true")
