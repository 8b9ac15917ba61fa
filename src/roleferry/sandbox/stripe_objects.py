"""Stripe objects as the API returns them: every top-level field Stripe publishes for the type,
`null` where empty, so a client that reads a field works against the sandbox as it would live.

Field sets follow the official SDK's resource classes (generated from Stripe's OpenAPI
description); tests/contracts/ checks them against the installed SDK.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

API_VERSION = "2026-10-28.endive"


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_urlsafe(18).replace('-', 'a').replace('_', 'b')}"


def list_object(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    """Stripe's list envelope, as every list endpoint and expanded list answers."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _address() -> dict[str, None]:
    return dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))


def checkout_session(
    sid: str,
    *,
    mode: str,
    ui_mode: str,
    amount: int,
    currency: str,
    params: dict[str, Any],
    url: str | None,
    expires_at: int,
) -> dict[str, Any]:
    """An open Checkout Session, as `POST /v1/checkout/sessions` answers."""
    payment = mode == "payment"
    return {
        "id": sid,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False} if payment else None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "allowed_payment_method_types": None,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "branding_settings": None,
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": int(time.time()),
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": dict.fromkeys(
            ("after_submit", "shipping_address", "submit", "terms_of_service_acceptance")
        ),
        "customer": params.get("customer"),
        "customer_account": None,
        "customer_creation": "if_required" if payment and not params.get("customer") else None,
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "discounts": [],
        "excluded_payment_method_types": [],
        "expires_at": expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        }
        if payment
        else None,
        "livemode": False,
        "locale": params.get("locale"),
        "managed_payments": None,
        "metadata": params.get("metadata") or {},
        "mode": mode,
        "name_collection": None,
        "optional_items": None,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": "unpaid" if payment else "no_payment_required",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "redirect_on_completion": None,
        "return_url": params.get("return_url"),
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": params.get("success_url"),
        "tax_id_collection": {"enabled": False, "required": "never"},
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": url,
        "wallet_options": None,
    }


def complete_session(session: dict[str, Any], intent_id: str) -> None:
    """What paying on the hosted page changes: status, payer details, the page URL gone."""
    session.update(
        status="complete",
        payment_status="paid",
        payment_intent=intent_id,
        url=None,
        collected_information={
            "business_name": None,
            "individual_name": None,
            "shipping_details": None,
        },
        customer_details={
            "address": {**_address(), "country": "US", "postal_code": "94103"},
            "business_name": None,
            "email": session.get("customer_email") or "payer@example.com",
            "individual_name": None,
            "name": "Sandbox Payer",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
    )


def line_item(
    description: str, quantity: int, unit_amount: int, currency: str, price_id: str | None
) -> dict[str, Any]:
    """A Checkout line item with its price, as `expand[]=line_items` returns it."""
    total = unit_amount * quantity
    return {
        "id": new_id("li"),
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": total,
        "amount_tax": 0,
        "amount_total": total,
        "currency": currency,
        "description": description,
        "discounts": [],
        "metadata": {},
        "price": {
            "id": price_id or new_id("price"),
            "object": "price",
            "active": price_id is not None,
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": "prod_sandbox_" + (price_id or "adhoc"),
            "recurring": None,
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
        "taxes": [],
    }


def payment_intent(
    amount: int,
    currency: str,
    metadata: dict[str, Any],
    description: str | None = None,
    *,
    automatic_payment_methods: bool = True,
) -> dict[str, Any]:
    """A PaymentIntent awaiting a payment method; Checkout's own intents list `card` instead
    of automatic payment methods, as Stripe's do."""
    pid = new_id("pi")
    return {
        "id": pid,
        "object": "payment_intent",
        "allowed_payment_method_types": None,
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True}
        if automatic_payment_methods
        else None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pid}_secret_{secrets.token_hex(8)}",
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "description": description,
        "excluded_payment_method_types": None,
        "hooks": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": metadata,
        "next_action": None,
        "on_behalf_of": None,
        "payment_details": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "payment_record": None,
        "presentment_details": None,
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }


def declined_error(charge_id: str) -> dict[str, Any]:
    """`last_payment_error` of a PaymentIntent whose card was declined."""
    return {
        "advice_code": "try_again_later",
        "charge": charge_id,
        "code": "card_declined",
        "decline_code": "generic_decline",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card was declined.",
        "network_advice_code": None,
        "network_decline_code": None,
        "param": None,
        "payment_method_type": "card",
        "request_log_url": None,
        "type": "card_error",
    }


def charge(intent: dict[str, Any], payment_method: str) -> dict[str, Any]:
    """The succeeded card charge of a PaymentIntent (test card 4242, Visa)."""
    amount = intent["amount"]
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "authorization_code": None,
        "balance_transaction": new_id("txn"),
        "billing_details": {
            "address": _address(),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "ROLEFERRY",
        "captured": True,
        "created": int(time.time()),
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "level3": None,
        "livemode": False,
        "metadata": intent["metadata"],
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": payment_method,
        "payment_method_details": {
            "card": {
                "amount_authorized": amount,
                "authorization_code": None,
                "brand": "visa",
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "exp_month": 12,
                "exp_year": 2034,
                "extended_authorization": {"status": "disabled"},
                "fingerprint": "sandboxVisa4242",
                "funding": "credit",
                "incremental_authorization": {"status": "unavailable"},
                "installments": None,
                "last4": "4242",
                "mandate": None,
                "multicapture": {"status": "unavailable"},
                "network": "visa",
                "network_token": {"used": False},
                "network_transaction_id": secrets.token_hex(8),
                "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                "regulated_status": "unregulated",
                "three_d_secure": None,
                "wallet": None,
            },
            "type": "card",
        },
        "presentment_details": None,
        "radar_options": {},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer": None,
        "transfer_data": None,
        "transfer_group": None,
    }


def failed_charge(intent: dict[str, Any], payment_method: str) -> dict[str, Any]:
    """The failed charge a declined card leaves (test card 0002: generic decline)."""
    failed = charge(intent, payment_method)
    card = failed["payment_method_details"]["card"]
    card.update(amount_authorized=None, last4="0002", fingerprint="sandboxVisa0002", checks=None)
    failed.update(
        amount_captured=0,
        balance_transaction=None,
        captured=False,
        paid=False,
        status="failed",
        failure_code="card_declined",
        failure_message="Your card was declined.",
        outcome={
            "advice_code": "try_again_later",
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "declined_by_network",
            "reason": "generic_decline",
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        },
    )
    return failed


def refund(
    charge_: dict[str, Any], amount: int, reason: str | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    """A card refund that succeeded at once, as test mode's do."""
    return {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge_["id"],
        "created": int(time.time()),
        "currency": charge_["currency"],
        "customer": charge_["customer"],
        "customer_account": None,
        "description": None,
        "destination_details": {
            "card": {
                "reference": None,
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "failure_balance_transaction": None,
        "failure_reason": None,
        "instructions_email": None,
        "metadata": metadata,
        "next_action": None,
        "payment_intent": charge_["payment_intent"],
        "payment_method": charge_["payment_method"],
        "pending_reason": None,
        "presentment_details": None,
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def event(
    type_: str, obj: dict[str, Any], idempotency_key: str | None, account: str | None = None
) -> dict[str, Any]:
    """An event about `obj` as it is now, awaiting delivery to the one webhook endpoint. A
    connected account's event names it in `account` and `context`; the platform's own events
    carry neither field, as Stripe sends them."""
    connect = {"account": account, "context": account} if account else {}
    return {
        "id": new_id("evt"),
        "object": "event",
        **connect,
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_" + secrets.token_hex(7), "idempotency_key": idempotency_key},
        "type": type_,
    }
