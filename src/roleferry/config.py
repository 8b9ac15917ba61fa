"""Settings: one pydantic-settings class, every name prefixed `ROLEFERRY_`.

A provider without an API key talks to the built-in sandbox; with a key, to the real API.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from roleferry.payments.settings import PaymentSettings
from roleferry.providers.catalog import BY_NAME, SPECS
from roleferry.providers.sandbox_credentials import (
    SANDBOX_STRIPE_WEBHOOK_SECRET,
    public_key_b64,
    sendgrid_signing_key,
)
from roleferry.providers.spec import Capability, ProviderSpec

Provider = StrEnum("Provider", {s.name.upper(): s.name for s in SPECS})  # type: ignore[misc]
"""Every provider's name, one member per spec in the catalog."""

DEFAULT_DATA_DIR = Path(".roleferry")
MIB = 1024 * 1024


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def provider_settings(specs: tuple[ProviderSpec, ...] = SPECS) -> type[BaseSettings]:
    """`<name>_api_key`, `<name>_base_url` and `<name>_rate_limit` for every spec, the budget
    defaulting to the spec's."""
    fields: dict[str, Any] = {}
    for spec in specs:
        fields[f"{spec.name}_api_key"] = (SecretStr | None, None)
        fields[f"{spec.name}_base_url"] = (str | None, None)
        fields[f"{spec.name}_rate_limit"] = (
            str,
            Field(spec.rate_limit, description=f"Our {spec.title} budget: calls/seconds[,…]."),
        )
    model: type[BaseSettings] = create_model("ProviderSettings", __base__=BaseSettings, **fields)
    return model


if TYPE_CHECKING:
    _ProviderSettings = BaseSettings
else:
    _ProviderSettings = provider_settings()


class Settings(PaymentSettings, _ProviderSettings):
    """Everything configurable, read from the environment (and `.env`)."""

    model_config = SettingsConfigDict(
        env_prefix="ROLEFERRY_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/roleferry.sqlite"
    redis_url: str | None = None
    public_url: str | None = Field(
        default=None,
        description="Where this server is reached from outside; defaults to http://HOST:PORT.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "console"
    max_body_bytes: int = Field(default=MIB, gt=0)
    webhook_max_body_bytes: int = Field(default=5 * MIB, gt=0)

    sendgrid_webhook_public_key: str | None = None
    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    bulk_share: float = Field(0.8, gt=0, le=1, description="Share of each budget bulk may use.")
    attempt_timeout_s: float = Field(2.0, gt=0)
    breaker_open_s: float = Field(30.0, gt=0)
    waterfall: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["apollo", "clay", "hunter"]
    )
    search_deadline_s: float = Field(
        5.0, gt=0, le=10, description="Deadline of a search or enrich that names none."
    )
    user_budget_share: float = Field(
        0.5, gt=0, le=1, description="Share of each provider budget one user may use."
    )
    api_key_cache_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long a process remembers an API key it checked; a key revoked through "
        "another process still works in this one for at most this long. 0: always ask the "
        "database.",
    )
    user_rate_limit: str = Field(
        "20/1,600/60", description="API requests per user: calls/seconds[,…]."
    )
    no_hedge: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Providers whose slow interactive calls are not hedged: apollo,clay",
    )
    search_cache_ttl_s: int = Field(86_400, ge=0)

    sendgrid_webhook_tolerance_s: float = Field(600, gt=0, description="Replay window, seconds.")
    stripe_webhook_tolerance_s: float = Field(300, gt=0, description="Replay window, seconds.")
    webhook_max_attempts: int = Field(
        5, ge=1, description="Tries of a failing webhook event before it is parked as failed."
    )
    webhook_retry_backoff_s: float = Field(
        1.0, gt=0, description="Wait before a failing webhook event's second try; doubles."
    )

    bench_routes: bool = Field(
        False, description="Mount POST /_bench/bare, a ceiling for benchmarks."
    )

    enrichment_backoff_s: float = Field(
        30.0, gt=0, description="First retry of a contact after a transient failure; doubles."
    )
    callback_allow_loopback: bool | None = Field(
        None, description="Allow callbacks to loopback addresses; default: yes in development."
    )
    callback_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Non-public networks callbacks may reach anyway (CIDRs, comma-separated).",
    )
    dbos_poll_s: float = Field(
        0.5, gt=0, description="How often DBOS looks for messages and events (and stops)."
    )
    executor_id: str | None = Field(
        None,
        max_length=100,
        description="This process's DBOS executor id; unique per live process. Default: "
        "'local' on SQLite (one process), a new id per process start on PostgreSQL.",
    )
    heartbeat_interval_s: float = Field(
        5.0, gt=0, description="How often each process says it is alive (PostgreSQL)."
    )
    executor_dead_after_s: float = Field(
        30.0,
        gt=0,
        description="A process silent this long is dead: a survivor takes over its workflows.",
    )
    shutdown_grace_s: int = Field(
        0,
        ge=0,
        description="On SIGTERM, wait this long for running workflows to finish; what is left "
        "is handed back to the other processes (PostgreSQL) or resumed at restart (SQLite).",
    )
    dogstatsd_url: str | None = Field(
        None, description="Also send metrics to this DogStatsD agent, e.g. udp://127.0.0.1:8125."
    )
    dogstatsd_interval_s: float = Field(
        10.0, gt=0, description="How often metrics go to the DogStatsD agent."
    )

    anthropic_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["claude-sonnet-4-6", "claude-haiku-4-5"],
        description="The drafting model chain, tried in order: claude-sonnet-4-6,claude-haiku-4-5",
    )
    draft_first_token_s: float = Field(
        3.0, gt=0, le=60, description="A model's first token deadline, but the last model's."
    )
    draft_deadline_s: float = Field(
        20.0, gt=0, le=300, description="A draft's overall deadline, first token to last."
    )
    draft_stall_s: float = Field(
        5.0, gt=0, le=60, description="A stream with no event this long is broken."
    )
    draft_daily_tokens: int = Field(
        200_000, ge=0, description="Model tokens one user may use a day (UTC); 0: no limit."
    )

    sequence_dispatch: bool = Field(
        True, description="Run the sequence dispatcher in this process (tests drive it by hand)."
    )
    sequence_tick_s: float = Field(
        1.0, gt=0, description="How often the dispatcher looks for due sequence steps."
    )
    sequence_batch: int = Field(200, gt=0, le=1000, description="Steps claimed per tick.")
    sequence_personalizations: int = Field(
        1000,
        ge=1,
        le=1000,
        description="Most steps of one sequence step sent in one mail/send request "
        "(SendGrid allows 1,000 personalizations); 1: a request per email.",
    )
    sequence_send_concurrency: int = Field(
        8, gt=0, le=64, description="mail/send requests in flight at once."
    )
    sequence_ambiguity_s: float = Field(
        600.0,
        gt=0,
        description="How long a step whose send outcome is unknown waits for its `processed` "
        "event before it is sent again.",
    )
    suppression_sync_s: float = Field(
        3600.0, gt=0, description="How often SendGrid's suppression lists are synced."
    )
    unsubscribe_secret: SecretStr | None = Field(
        None,
        description="Signs one-click unsubscribe links; default: a key kept in the data dir.",
    )
    sandbox_seed: int = 7
    sandbox_faults: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Faults the sandbox starts with: apollo:error_rate=0.3,hunter:latency_ms=200",
    )
    sandbox_enabled: bool | None = Field(
        default=None,
        description="Mount /sandbox; defaults to on when any provider has no key.",
    )
    sandbox_admin_key: SecretStr | None = Field(
        default=None,
        description="Opens /sandbox/_control to callers that are not local (Bearer token).",
    )
    sandbox_webhook_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URL prefixes the simulators may deliver webhooks to besides this server.",
    )

    @field_validator(
        "stripe_webhook_secret",
        "sandbox_faults",
        "waterfall",
        "callback_allowed_networks",
        "sandbox_webhook_targets",
        "no_hedge",
        "anthropic_models",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("waterfall")
    @classmethod
    def _known_finders(cls, value: list[str]) -> list[str]:
        allowed = {s.name for s in SPECS if s.offers(Capability.EMAIL_FINDER)}
        if not value or set(value) - allowed or len(set(value)) != len(value):
            raise ValueError(f"waterfall must list some of {sorted(allowed)} once each")
        return value

    @field_validator("no_hedge")
    @classmethod
    def _known_hedged(cls, value: list[str]) -> list[str]:
        allowed = {s.name for s in SPECS if s.offers(Capability.EMAIL_FINDER)}
        if set(value) - allowed:
            raise ValueError(f"no_hedge must list some of {sorted(allowed)}")
        return value

    @field_validator("anthropic_models")
    @classmethod
    def _some_models(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value) or any(len(m) > 100 for m in value):
            raise ValueError("anthropic_models must name at least one model, each once")
        return value

    @field_validator("user_rate_limit")
    @classmethod
    def _valid_user_rate(cls, value: str) -> str:
        from roleferry.resilience.ratelimit import Window

        Window.parse(value)
        return value

    @model_validator(mode="after")
    def _valid_rates(self) -> Settings:
        from roleferry.resilience.ratelimit import Window

        for spec in SPECS:
            try:
                Window.parse(self.rate_limit(spec.name))
            except ValueError as exc:
                raise ValueError(f"ROLEFERRY_{spec.name.upper()}_RATE_LIMIT: {exc}") from None
        return self

    @field_validator("callback_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("ROLEFERRY_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("dogstatsd_url")
    @classmethod
    def _valid_dogstatsd(cls, value: str | None) -> str | None:
        if value is not None:
            from roleferry.monitoring.dogstatsd import parse_address

            parse_address(value)
        return value

    @model_validator(mode="after")
    def _callbacks_default(self) -> Settings:
        if self.callback_allow_loopback is None:
            object.__setattr__(self, "callback_allow_loopback", self.env == "development")
        return self

    @model_validator(mode="after")
    def _no_sandbox_in_production(self) -> Settings:
        if self.env == "production":
            missing = [s.name for s in SPECS if self.api_key(s.name) is None]
            if missing:
                raise ValueError(
                    "ROLEFERRY_ENV=production needs a real API key for every provider; "
                    f"missing: {', '.join(missing)}"
                )
            if self.sandbox_enabled:
                raise ValueError(
                    "ROLEFERRY_SANDBOX_ENABLED=true is refused in production: the sandbox's "
                    "credentials are public; unset it"
                )
            problems = self.webhook_secret_problems()
            if problems:
                raise ValueError(
                    "ROLEFERRY_ENV=production needs each live provider's webhook secret: "
                    + "; ".join(problems)
                )
        return self

    @model_validator(mode="after")
    def _no_public_secret_for_live(self) -> Settings:
        stripe = {s.get_secret_value() for s in self.stripe_webhook_secret}
        if self.is_live("stripe") and SANDBOX_STRIPE_WEBHOOK_SECRET in stripe:
            raise ValueError(
                "ROLEFERRY_STRIPE_WEBHOOK_SECRET holds the sandbox's public test secret while "
                "Stripe is live: set the endpoint's signing secret from Stripe's dashboard"
            )
        if self.is_live("sendgrid") and self.sendgrid_webhook_public_key == public_key_b64(
            sendgrid_signing_key(self.sandbox_seed)
        ):
            raise ValueError(
                "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY is the sandbox's test key while "
                "SendGrid is live: set the verification key SendGrid shows"
            )
        return self

    def webhook_secret_problems(self) -> list[str]:
        """Live providers whose webhook deliveries cannot be verified: all will be refused."""
        problems = []
        if self.is_live("stripe") and not self.stripe_webhook_secret:
            problems.append(
                "Stripe is live (ROLEFERRY_STRIPE_API_KEY is set) but "
                "ROLEFERRY_STRIPE_WEBHOOK_SECRET is not: set the endpoint's signing secret "
                "(whsec_...), or every Stripe webhook is refused"
            )
        if self.is_live("sendgrid") and not self.sendgrid_webhook_public_key:
            problems.append(
                "SendGrid is live (ROLEFERRY_SENDGRID_API_KEY is set) but "
                "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY is not: set the Event Webhook's "
                "verification key, or every SendGrid webhook is refused"
            )
        return problems

    def api_key(self, provider: str) -> SecretStr | None:
        key: SecretStr | None = getattr(self, f"{provider}_api_key")
        return key if key is not None and key.get_secret_value() else None

    def is_live(self, provider: str) -> bool:
        return self.api_key(provider) is not None

    def rate_limit(self, provider: str) -> str:
        """Our budget for the provider (`ROLEFERRY_<NAME>_RATE_LIMIT`, else its spec's)."""
        value: str = getattr(self, f"{provider}_rate_limit")
        return value

    def credential(self, provider: str) -> SecretStr:
        """The key our client sends: the configured one, else the spec's sandbox test key."""
        return self.api_key(provider) or SecretStr(BY_NAME[provider].sandbox_key)

    def sendgrid_public_key(self) -> str | None:
        """The key SendGrid events are verified with: the configured one; the sandbox's only
        while SendGrid itself is in sandbox mode; None (refuse every event) when live."""
        if self.sendgrid_webhook_public_key:
            return self.sendgrid_webhook_public_key
        if self.is_live("sendgrid"):
            return None
        return public_key_b64(sendgrid_signing_key(self.sandbox_seed))

    def stripe_webhook_secrets(self) -> list[str]:
        """Every secret a Stripe signature may match: the configured ones; the sandbox's only
        while Stripe itself is in sandbox mode; none (refuse every event) when live."""
        if self.stripe_webhook_secret:
            return [s.get_secret_value() for s in self.stripe_webhook_secret]
        if self.is_live("stripe"):
            return []
        return [SANDBOX_STRIPE_WEBHOOK_SECRET]

    @property
    def sandbox_mounted(self) -> bool:
        if self.sandbox_enabled is not None:
            return self.sandbox_enabled
        return any(not self.is_live(s.name) for s in SPECS)

    def base_url(self, provider: str, server_url: str) -> str:
        """The provider's base URL: configured, else real when live, else our sandbox."""
        configured: str | None = getattr(self, f"{provider}_base_url")
        if configured:
            return configured.rstrip("/")
        spec = BY_NAME[provider]
        if self.is_live(provider):
            return spec.live_url
        return spec.sandbox_url(self.public_url or server_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the log redactor."""
        values = [k.get_secret_value() for s in SPECS if (k := self.api_key(s.name)) is not None]
        values += [s.get_secret_value() for s in self.stripe_webhook_secret]
        if self.sandbox_admin_key is not None:
            values.append(self.sandbox_admin_key.get_secret_value())
        return [v for v in values if len(v) >= 6]
