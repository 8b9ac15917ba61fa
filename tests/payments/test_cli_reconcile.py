"""`roleferry payments reconcile` from the command line: Stripe (the sandbox server) holds a
paid checkout whose webhook was never delivered; one run lists it and grants the credits."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import stripe

from tests.support.sandbox_server import SandboxServer


def test_reconcile_command_grants_an_undelivered_checkout(
    sb: SandboxServer, env: dict[str, str], tmp_path: Path
) -> None:
    """The event was dropped; the command finds it and the buyer has 100 credits, once."""
    env = {**env, "ROLEFERRY_STRIPE_BASE_URL": sb.base("stripe")}
    command = [sys.executable, "-m", "roleferry"]
    created = subprocess.run(
        [*command, "users", "create", "buyer@example.com"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    with sqlite3.connect(tmp_path / "rf.sqlite") as db:
        (user_id,) = db.execute("SELECT id FROM users").fetchone()
    sb.control("stripe", drop_events=["checkout.session.completed"])
    sdk = stripe.StripeClient("sk_test_sandbox", base_addresses={"api": sb.base("stripe")})
    session = sdk.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": "price_credits_100", "quantity": 1}],
            "success_url": "https://app.example.com/ok",
            "client_reference_id": user_id,
            "metadata": {"credits": "100"},
        }
    )
    paid = httpx.post(session.url or "", data={"card_number": "4242424242424242"})
    assert paid.status_code == 303
    for run in range(2):
        result = subprocess.run(
            [*command, "payments", "reconcile"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "undelivered events" in result.stdout
        if run == 0:
            assert "1 new to the inbox" in result.stdout, result.stdout
    with sqlite3.connect(tmp_path / "rf.sqlite") as db:
        rows = db.execute(
            "SELECT reason, delta FROM credit_ledger WHERE user_id = ?", (user_id,)
        ).fetchall()
    assert rows == [("purchase", 100)]
