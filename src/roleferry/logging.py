"""Structured logs with secrets redacted, for our own records and for every library's.

Redaction works on keys (anything named like a key, token, secret or signature) and on values
(every secret in the settings, and the shapes of provider keys and of our own API keys), so a
key that slips into a URL, an exception or a third-party log line is still masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
DATABASE_LOGGERS = ("sqlalchemy", "aiosqlite", "psycopg")

_SENSITIVE_KEY = re.compile(
    r"(api[_-]?key|authorization|secret|password|passwd|token|signature|cookie)", re.I
)
_SECRET_SHAPES = [
    re.compile(r"\brf_[A-Za-z0-9_-]{16,}"),
    re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{8,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"),
    re.compile(r"\bSG\.[\w-]{8,}\.[\w-]{8,}"),
    re.compile(r"\bsk-ant-[\w-]{8,}"),
    re.compile(r"(?i)(?P<keep>api_key=)[^&\s\"']+"),
    re.compile(r"(?i)(?P<keep>bearer\s+)[^\s\"',]+"),
    re.compile(r"(?i)(?P<keep>x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s\"',]+"),
]


def _mask(match: re.Match[str]) -> str:
    keep = match.group("keep") if "keep" in match.re.groupindex else ""
    return keep + REDACTED


class Redactor:
    """Masks known secret values and secret-shaped strings in any log field."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def register(self, values: Iterable[str]) -> None:
        known = set(self._values) | {v for v in values if v}
        self._values = sorted(known, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for shape in _SECRET_SHAPES:
            value = shape.sub(_mask, value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if _SENSITIVE_KEY.search(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(repr(value))
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if _SENSITIVE_KEY.search(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self.value(event_dict[key])
        return event_dict


redactor = Redactor()


def _render_exception_then_redact(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    rendered = structlog.processors.format_exc_info(logger, method, event_dict)
    return redactor(logger, method, rendered)


# Libraries whose INFO records narrate their own start-up (DBOS's 60-odd schema migration
# steps, alembic's, uvicorn's "started"): worth having when debugging, noise otherwise.
CHATTY_LIBRARIES = ("dbos", "alembic", "uvicorn")


class LibraryChatterAtDebug(logging.Filter):
    """Shows the INFO records of chatty libraries as DEBUG, so they appear only at DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".")[0] in CHATTY_LIBRARIES:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.level <= logging.DEBUG
        return True


def route_dbos_logs() -> None:
    """DBOS installs its own console handler, in its own format, unless its logger has one:
    a handler that does nothing there sends every DBOS record on to ours instead."""
    dbos = logging.getLogger("dbos")
    dbos.handlers[:] = [logging.NullHandler()]
    dbos.propagate = True


def configure_logging(
    level: str = "INFO",
    fmt: str = "console",
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> None:
    """Route structlog and stdlib logging through one redacting pipeline."""
    redactor.register(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _render_exception_then_redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    threshold = logging.getLevelNamesMapping().get(level.upper())
    if threshold is None:
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler.addFilter(LibraryChatterAtDebug(threshold))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    route_dbos_logs()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # At DEBUG the database drivers log every statement with its bound values (aiosqlite,
    # psycopg) and SQLAlchemy its result rows: addresses, names, callback URLs with their
    # tokens. Whatever the level asked for, they say warnings and errors only.
    for name in DATABASE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
