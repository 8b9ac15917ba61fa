"""The API reference pages work with no network: every asset they load is served by us."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roleferry.app import create_app
from roleferry.runtime import Runtime
from roleferry.web.api_docs import STATIC_DIR
from tests.conftest import make_settings

REFERENCE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_reference_page_loads_only_local_assets(tmp_path: Path, page: str) -> None:
    """Each script, stylesheet, icon and spec the page names answers 200 from this server,
    and the page names no address on another host (a CDN, Google Fonts, a validator)."""
    client = TestClient(create_app(Runtime(make_settings(tmp_path))))
    html = client.get(page)
    assert html.status_code == 200
    assert not re.search(r"https?://", html.text), "the page loads something from elsewhere"
    references = [a or b for a, b in REFERENCE.findall(html.text)]
    assert any(r.endswith(".js") for r in references), references
    assert "/openapi.json" in references
    for reference in references:
        assert reference.startswith("/"), reference
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 0, reference


def test_vendored_assets_ship_with_their_licences() -> None:
    """Each vendored library sits beside its licence, as its licence requires."""
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_DIR / folder / "LICENSE").read_text().strip()
