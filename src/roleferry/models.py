"""Every table, imported in one place so Alembic and tests see the whole schema."""

from roleferry.db import Base
from roleferry.search.cache import CacheEntry
from roleferry.users.models import ApiKey, User

__all__ = ["ApiKey", "Base", "CacheEntry", "User"]
