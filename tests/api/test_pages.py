"""The pages as files and HTTP answers: served from the installed package, every asset they
name exists, nothing is fetched from another host (the edge box may have no uplink), no
inline script or style (the Content-Security-Policy forbids them), and every API path the
scripts call exists in the OpenAPI document (a renamed route breaks this test, not a
customer's kiosk)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import station.api
from station.api import pages
from station.bootstrap import build_station
from station.config import load_secrets, write_new_secrets
from tests.conftest import example_config

PAGES = ("/kiosk", "/courier", "/operator")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("pages")
    secrets = load_secrets(write_new_secrets(tmp / "secrets.toml"), env={})
    station = build_station(example_config(tmp), secrets)
    yield station.app
    station.store.close()


@pytest.fixture(scope="module")
def client(app: Any) -> TestClient:
    return TestClient(app)


class _Refs(HTMLParser):
    """Collects asset references and anything the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.links: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.assets.append(a["src"] or "")
            else:
                self._in_script = True
        if tag == "link" and a.get("href"):
            self.assets.append(a["href"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def _parse(html: str) -> _Refs:
    refs = _Refs()
    refs.feed(html)
    return refs


def test_static_files_come_from_the_installed_package() -> None:
    assert Path(station.api.__file__).parent / "static" == pages.STATIC
    for name in ("kiosk.html", "courier.html", "operator.html", "css/station.css", "js/common.js",
                 "js/kiosk.js", "js/courier.js", "js/operator.js"):
        assert (pages.STATIC / name).is_file(), name


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_public_html_with_security_headers(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert res.headers["referrer-policy"] == "no-referrer"        # ?token= never leaks by Referer
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert res.headers["x-frame-options"] == "DENY"
    assert 'lang="zh-CN"' in res.text and "<meta charset=\"utf-8\">" in res.text


@pytest.mark.parametrize("path", PAGES)
def test_every_asset_a_page_names_is_served(client: TestClient, path: str) -> None:
    refs = _parse(client.get(path).text)
    assert refs.assets, path
    for asset in refs.assets:
        if asset.startswith("data:"):          # the empty favicon: no request at all
            continue
        assert asset.startswith("/static/"), f"{path} loads {asset} from elsewhere"
        res = client.get(asset)
        assert res.status_code == 200, asset
        want = "text/css" if asset.endswith(".css") else "javascript"
        assert want in res.headers["content-type"], asset


@pytest.mark.parametrize("path", PAGES)
def test_no_inline_script_or_style(client: TestClient, path: str) -> None:
    """The CSP would block them silently; better to fail here."""
    assert _parse(client.get(path).text).inline == []


def test_nothing_is_fetched_from_another_host() -> None:
    for f in pages.STATIC.rglob("*"):
        if f.suffix in (".html", ".js", ".css"):
            text = f.read_text(encoding="utf-8")
            assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), f
            assert "cdn" not in text.lower(), f


def test_index_links_the_pages(client: TestClient) -> None:
    res = client.get("/")
    assert res.status_code == 200
    links = _parse(res.text).links
    for path in PAGES:
        assert path in links


def _api_paths_in(js: str) -> set[str]:
    """'/api/x/${encodeURIComponent(id)}/y' -> '/api/x/{}/y' (query strings dropped)."""
    found = set()
    for m in re.finditer(r"[`\"'](/api/[^`\"'?]*)", js):
        path = re.sub(r"\$\{[^}]*\}", "{}", m.group(1))
        found.add(path.rstrip("/") if path != "/api/" else path)
    return found


def test_every_api_path_the_scripts_call_exists(app: Any) -> None:
    routes = [re.compile("^" + re.sub(r"\\\{[^}]*\\\}", r"[^/]+", re.escape(p)) + "$")
              for p in app.openapi()["paths"]]
    called: set[str] = set()
    for js in (pages.STATIC / "js").glob("*.js"):
        called |= _api_paths_in(js.read_text(encoding="utf-8"))
    assert len(called) >= 15, called
    for path in called:
        concrete = path.replace("{}", "x1")
        assert any(r.match(concrete) for r in routes), f"the pages call {path}, which the API does not have"


def test_the_pages_cover_the_api_they_are_for(app: Any) -> None:
    """Each page reaches the routes its job needs (a missing one is a missing feature)."""
    text = {p: (pages.STATIC / "js" / f"{p}.js").read_text(encoding="utf-8") for p in ("kiosk", "courier", "operator")}
    need = {
        "kiosk": ["/api/kiosk/code", "/api/kiosk/otp/request", "/api/kiosk/otp/verify", "/api/kiosk/qr-frame"],
        "courier": ["/api/courier/login", "/api/courier/sessions", "/scans", "/close", "/api/courier/me"],
        "operator": ["/api/operator/state", "/api/operator/events", "/api/operator/events/export",
                     "/api/operator/verify", "/api/operator/replay", "/api/operator/stream",
                     "/ack", "/api/operator/snapshots/", "/api/operator/couriers"],
    }
    for page, paths in need.items():
        for p in paths:
            assert p in text[page], f"{page} page never calls {p}"


def test_animation_names_are_not_css_keywords() -> None:
    """`animation: alternate 1s` parses `alternate` as the direction and runs nothing: a
    shared slot then shows one customer's colour only. Keyframe names carry a prefix."""
    css = (pages.STATIC / "css" / "station.css").read_text(encoding="utf-8")
    names = re.findall(r"@keyframes\s+([\w-]+)", css)
    assert names
    keywords = {"alternate", "alternate-reverse", "reverse", "normal", "infinite", "linear", "ease",
                "forwards", "backwards", "both", "running", "paused", "none", "blink"}
    assert not set(names) & keywords, names
    for used in re.findall(r"animation:\s*([\w-]+)", css):
        assert used in names, f"animation {used} has no @keyframes"
