"""docs/providers.md is what the specs render: regenerate it with `make docs`."""

from __future__ import annotations

from roleferry.providers.catalog import SPECS
from roleferry.providers.docs import OUTPUT, render


def test_providers_page_is_current() -> None:
    """Fails when a spec changed and `make docs` was not run."""
    assert OUTPUT.read_text() == render(), "docs/providers.md is stale: run `make docs`"


def test_the_page_names_every_provider_its_auth_and_quirks() -> None:
    page = render()
    for spec in SPECS:
        assert f"(`{spec.name}`)" in page
        assert spec.auth.describe() in page
        assert f"`{spec.rate_limit}`" in page
        for quirk in spec.quirks:
            assert quirk.why in page
        for endpoint in spec.endpoints:
            assert f"`{endpoint.path}`" in page
