"""Every provider this service knows, in one list: adding one is adding its spec here."""

from __future__ import annotations

from roleferry.providers.anthropic.spec import SPEC as ANTHROPIC
from roleferry.providers.apollo.spec import SPEC as APOLLO
from roleferry.providers.clay.spec import SPEC as CLAY
from roleferry.providers.hunter.spec import SPEC as HUNTER
from roleferry.providers.sendgrid.spec import SPEC as SENDGRID
from roleferry.providers.spec import Capability, ProviderSpec
from roleferry.providers.stripe.spec import SPEC as STRIPE

SPECS: tuple[ProviderSpec, ...] = (APOLLO, CLAY, HUNTER, SENDGRID, ANTHROPIC, STRIPE)
BY_NAME: dict[str, ProviderSpec] = {spec.name: spec for spec in SPECS}


def spec_of(name: str) -> ProviderSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}: one of {', '.join(BY_NAME)}") from None


def offering(capability: Capability) -> list[str]:
    """Names of the providers that offer a capability, in catalog order."""
    return [spec.name for spec in SPECS if spec.offers(capability)]
