"""The sandbox's fixed, documented test credentials (public by design: they open only the
local simulators). With no ROLEFERRY_<PROVIDER>_API_KEY set, our clients use these."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SANDBOX_API_KEYS: dict[str, str] = {
    "apollo": "sandbox-apollo-key",
    "clay": "sandbox-clay-key",
    "hunter": "sandbox-hunter-key",
    "sendgrid": "SG.sandbox-sendgrid.sandbox-key",
    "anthropic": "sk-ant-sandbox-key",
    "stripe": "sk_test_sandbox",
}
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
