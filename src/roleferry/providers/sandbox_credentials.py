"""The sandbox's fixed, documented test credentials (public by design: they open only the
local simulators). The API keys are the providers' specs' `sandbox_key`s: with no
ROLEFERRY_<PROVIDER>_API_KEY set, our clients send the same. They live with the specs, not in
the sandbox, because the core needs them too (to verify webhooks while a provider is in
sandbox mode, to refuse them for a live one): the sandbox depends on the core, not the reverse."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from roleferry.providers.catalog import SPECS

SANDBOX_API_KEYS: dict[str, str] = {spec.name: spec.sandbox_key for spec in SPECS}
SANDBOX_STRIPE_WEBHOOK_SECRET = "whsec_sandbox_roleferry"  # noqa: S105 (documented test secret)


@lru_cache(maxsize=4)
def sendgrid_signing_key(seed: int) -> ec.EllipticCurvePrivateKey:
    """The P-256 key the sandbox signs SendGrid events with, derived from the seed."""
    scalar = int.from_bytes(hashlib.sha256(f"sendgrid-webhook|{seed}".encode()).digest(), "big")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(scalar % (order - 1) + 1, ec.SECP256R1())


@lru_cache(maxsize=4)
def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()
