"""Payment and credit settings (`ROLEFERRY_…`), mixed into `roleferry.config.Settings`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

PACK = re.compile(r"^([a-z0-9_-]{1,32}):([1-9][0-9]{0,8}):([1-9][0-9]{1,8}):([a-z]{3})$")
PRICE = re.compile(r"^([a-z_]{1,24})=([0-9]{1,6})$")
SPEND_KINDS = ("email_found", "email_sent", "ai_draft")
"""What costs credits: a found email (search or enrichment), an email sent, an AI draft."""


@dataclass(frozen=True)
class Pack:
    name: str
    credits: int
    price: int
    currency: str


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class PaymentSettings(BaseSettings):
    billing: Literal["on", "off"] = Field(
        "on", description="off: nothing costs credits (deployments that bill elsewhere)."
    )
    credit_packs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "small:100:1000:usd",
            "medium:500:4000:usd",
            "large:2000:12000:usd",
        ],
        description="Packs on sale, name:credits:price_in_cents:currency, comma-separated.",
    )
    credit_prices: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["email_found=1", "email_sent=1", "ai_draft=2"],
        description="Credits per use: email_found, email_sent, ai_draft.",
    )
    starting_credits: int = Field(
        200, ge=0, le=1_000_000, description="Credits granted to every new user."
    )
    checkout_deadline_s: float = Field(
        5.0, gt=0, le=30, description="Deadline of a checkout call to Stripe."
    )
    checkout_success_url: str | None = Field(
        None,
        description="Where Stripe sends the buyer after paying; default PUBLIC_URL/?checkout=…",
    )
    checkout_cancel_url: str | None = Field(
        None, description="Where Stripe sends a buyer who cancels; default PUBLIC_URL/."
    )
    credits_retry_s: float = Field(
        60,
        gt=0,
        description="A bulk job waiting for credits asks again this often (a purchase wakes "
        "it at once; this is the fallback).",
    )
    reconcile_after_s: float = Field(
        600, gt=0, description="Open checkouts older than this are fetched from Stripe."
    )
    reconcile_interval_s: float = Field(
        300, ge=0, description="How often reconciliation runs in the server; 0: never."
    )

    @field_validator("credit_packs", "credit_prices", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("credit_packs")
    @classmethod
    def _valid_packs(cls, value: list[str]) -> list[str]:
        names = []
        for item in value:
            match = PACK.match(item)
            if match is None:
                raise ValueError(
                    f"credit pack {item!r} must be name:credits:price_in_cents:currency, "
                    "e.g. small:100:1000:usd"
                )
            if int(match.group(3)) < 50:
                raise ValueError(f"credit pack {item!r}: Stripe charges at least 50 cents")
            names.append(match.group(1))
        if not names or len(set(names)) != len(names):
            raise ValueError("credit_packs must name at least one pack, each name once")
        return value

    @field_validator("credit_prices")
    @classmethod
    def _valid_prices(cls, value: list[str]) -> list[str]:
        for item in value:
            match = PRICE.match(item)
            if match is None or match.group(1) not in SPEND_KINDS:
                raise ValueError(
                    f"credit price {item!r} must be kind=credits, kind one of {list(SPEND_KINDS)}"
                )
        return value

    def packs(self) -> dict[str, Pack]:
        found = {}
        for item in self.credit_packs:
            match = PACK.match(item)
            assert match is not None
            name, credits, price, currency = match.groups()
            found[name] = Pack(name, int(credits), int(price), currency)
        return found

    def price(self, kind: str) -> int:
        """Credits one use of `kind` costs; 0 with billing off or no price set."""
        if self.billing == "off":
            return 0
        for item in self.credit_prices:
            name, _, credits = item.partition("=")
            if name == kind:
                return int(credits)
        return 0
