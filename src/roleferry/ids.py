"""Resource identifiers: a type prefix and 20 random url-safe characters (`usr_…`, `key_…`)."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(15)}"
