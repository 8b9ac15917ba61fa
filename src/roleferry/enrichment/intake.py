"""Turning a JSON body or a CSV upload into contacts to enrich: every bad row reported with its
line, field and reason, the good rows kept.

Both are read as a stream and counted as they are read: an upload over MAX_ROWS contacts is
refused at its first extra row, before the rest is parsed or held in memory. The parsing is
plain CPU work, so the routes run it in a worker thread, off the event loop.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import IO, Any

import ijson
import ijson.backends.python as ijson_python

from roleferry.api.inputs import DOMAIN_PATTERN, NOT_BLANK, normalise_domain

MAX_ROWS = 10_000
# A contact is a flat object of a few text fields (about 12 JSON values); a body with far more
# values than MAX_ROWS contacts can have, or nested deeper than this, is refused as it streams.
MAX_JSON_VALUES = MAX_ROWS * 32
MAX_JSON_DEPTH = 16
LOCATE_MAX_BYTES = 1024 * 1024
"""A syntax error within this many bytes of the start is located by line and column (a second,
slower parse of that prefix, only once the fast one has failed)."""
_AT_OFFSET = re.compile(r" at (\d+)$")
TOO_MANY_ROWS = (
    f"the upload has more than {MAX_ROWS} contacts, the most one job takes; "
    f"split it into files of at most {MAX_ROWS} rows"
)
_SHAPE = '{"contacts": [{first_name, last_name, domain, title?, linkedin_url?}, ...]}'
FIELDS = ("first_name", "last_name", "domain", "title", "linkedin_url")
ALIASES = {
    "first name": "first_name",
    "firstname": "first_name",
    "last name": "last_name",
    "lastname": "last_name",
    "company_domain": "domain",
    "website": "domain",
    "company domain": "domain",
    "linkedin": "linkedin_url",
    "linkedin url": "linkedin_url",
}
_LINKEDIN = re.compile(r"^https?://([a-z]{2,3}\.)?linkedin\.com/", re.I)


_TEXT = {"type": "string", "pattern": NOT_BLANK}
_CONTACT = {
    "type": "object",
    "required": ["first_name", "last_name", "domain"],
    "properties": {
        "first_name": {**_TEXT, "maxLength": 100},
        "last_name": {**_TEXT, "maxLength": 100},
        "domain": {"type": "string", "pattern": DOMAIN_PATTERN},
        "title": {"type": "string", "maxLength": 200},
        "linkedin_url": {"type": "string", "pattern": _LINKEDIN.pattern},
    },
}
_MAX_WAIT_S = {
    "type": "number",
    "minimum": 0,
    "maximum": 3600,
    "description": "Seconds a contact may wait for an unavailable provider; "
    "also accepted as the `max_wait_s` query parameter.",
}
# The body the route reads itself (it streams it), for the API reference.
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["contacts"],
                "properties": {
                    "contacts": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_ROWS,
                        "items": _CONTACT,
                        "description": "Rows that fail these rules are reported as `rejected`.",
                    },
                    "callback_url": {"type": "string", "description": "Signed POST when done."},
                    "verify_patterns": {"type": "boolean"},
                    "max_wait_s": _MAX_WAIT_S,
                },
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "UTF-8 CSV."},
                    "callback_url": {"type": "string"},
                    "verify_patterns": {"type": "string", "enum": ["true", "false"]},
                    "max_wait_s": _MAX_WAIT_S,
                },
            }
        },
    },
}


class IntakeError(ValueError):
    """Nothing usable: an empty, unreadable or oversized input (422)."""

    def __init__(self, message: str, rejected: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []


class TooManyRows(IntakeError):
    """More than MAX_ROWS contacts: refused at the first extra one."""

    def __init__(self) -> None:
        super().__init__(TOO_MANY_ROWS)


@dataclass(frozen=True)
class Row:
    line: int
    first_name: str
    last_name: str
    domain: str
    title: str | None
    linkedin_url: str | None


def _check(line: int, raw: dict[str, Any]) -> tuple[Row | None, list[dict[str, Any]]]:
    problems = []
    values: dict[str, str | None] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            problems.append({"line": line, "field": name, "reason": "must be text"})
            value = None
        value = (value or "").strip() or None
        values[name] = value
    for name in ("first_name", "last_name", "domain"):
        if not values[name]:
            problems.append({"line": line, "field": name, "reason": "is required"})
    for name, limit in (("first_name", 100), ("last_name", 100), ("title", 200)):
        if values[name] and len(values[name] or "") > limit:
            problems.append(
                {"line": line, "field": name, "reason": f"is longer than {limit} characters"}
            )
    if values["domain"]:
        try:
            values["domain"] = normalise_domain(values["domain"] or "")
        except ValueError as exc:
            problems.append({"line": line, "field": "domain", "reason": str(exc)})
    if values["linkedin_url"] and not _LINKEDIN.match(values["linkedin_url"] or ""):
        problems.append(
            {"line": line, "field": "linkedin_url", "reason": "must be a linkedin.com URL"}
        )
    if problems:
        return None, problems
    return Row(
        line,
        values["first_name"] or "",
        values["last_name"] or "",
        values["domain"] or "",
        values["title"],
        values["linkedin_url"],
    ), []


@dataclass
class Upload:
    """What an upload holds: the good rows, the rejected ones, and (JSON) its other fields."""

    rows: list[Row] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    def _next(self) -> None:
        self.count += 1
        if self.count > MAX_ROWS:
            raise TooManyRows

    def add(self, line: int, raw: dict[str, Any]) -> None:
        self._next()
        row, problems = _check(line, raw)
        if row is None:
            self.rejected += problems
        else:
            self.rows.append(row)

    def reject(self, line: int, reason: str) -> None:
        """A row that is not even an object: one problem for the row."""
        self._next()
        self.rejected.append({"line": line, "field": "", "reason": reason})

    def finish(self) -> Upload:
        if not self.count:
            raise IntakeError("no contacts: send at least one")
        if not self.rows:
            raise IntakeError("no valid contacts; see the rejected rows", self.rejected)
        return self


_NOT_TEXT: dict[str, Any] = {"not": "text"}  # stands for a nested value: "must be text"
_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))


class JsonUpload:
    """`{"contacts": [...], ...}` fed in chunks as it arrives.

    Each contact is checked as soon as its object closes and only the checked row is kept;
    nested values inside a contact are skipped, not built. Other top-level fields are kept
    (small ones: they count against the same bounds).
    """

    def __init__(self) -> None:
        self._events = ijson.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events, use_float=True)
        self.upload = Upload()
        self._values = 0
        self._depth = 0
        self._key: str | None = None  # the top-level field being read
        self._seen_contacts = False
        self._row: dict[str, Any] | None = None
        self._row_key: str | None = None
        self._skip_to: int | None = None  # skipping a nested value until back at this depth
        self._builder: ijson.ObjectBuilder | None = None
        self._fed = False
        self._head = bytearray()  # the first LOCATE_MAX_BYTES, to locate a syntax error

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return  # an empty send would end the parser: only finish() does that
        self._fed = True
        if len(self._head) <= LOCATE_MAX_BYTES:
            self._head += chunk
        try:
            self._parser.send(chunk)
        except ijson.JSONError as exc:
            raise _invalid(exc, self._where()) from None
        self._consume()

    def finish(self) -> Upload:
        if not self._fed:
            raise IntakeError(f"the body is empty: send {_SHAPE} as JSON, or a CSV as `file`")
        try:
            self._parser.close()
        except ijson.JSONError as exc:
            raise _invalid(exc, self._where()) from None
        self._consume()
        if not self._seen_contacts:
            raise IntakeError(f"send {_SHAPE} as JSON, or a CSV as multipart `file`")
        return self.upload.finish()

    def _where(self) -> str:
        """` at line L, column C` of the syntax error, when it lies in the retained head."""
        if len(self._head) > LOCATE_MAX_BYTES:
            return ""
        try:
            for _ in ijson_python.basic_parse(io.BytesIO(bytes(self._head))):
                pass
        except ijson.JSONError as exc:
            found = _AT_OFFSET.search(str(exc.args[0]) if exc.args else "")
            if found is None:
                return ""
            offset = int(found.group(1))
            before = self._head.decode("utf-8", errors="replace")[:offset]
            return f" at line {before.count(chr(10)) + 1}, column {offset - before.rfind(chr(10))}"
        return ""

    def _consume(self) -> None:
        events = self._events
        self._values += len(events)
        if self._values > MAX_JSON_VALUES:
            raise IntakeError(
                f"the body holds more JSON values than {MAX_ROWS} contacts of a few text "
                "fields each can; send only the contacts and their fields"
            )
        try:
            for event, value in events:
                self._event(event, value)
        finally:
            events.clear()

    def _event(self, event: str, value: Any) -> None:
        depth = self._depth
        if event in _OPEN:
            self._depth += 1
            if self._depth > MAX_JSON_DEPTH:
                raise IntakeError(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        elif event in _CLOSE:
            self._depth -= 1
        if self._skip_to is not None:
            if self._depth == self._skip_to:
                self._skip_to = None
            return
        if self._builder is not None:
            self._builder.event(event, value)
            if self._depth == 1:
                self.upload.fields[self._key or ""] = self._builder.value
                self._builder = None
            return
        if depth == 0:
            if event != "start_map":
                raise IntakeError(f"send {_SHAPE} as JSON, or a CSV as multipart `file`")
        elif depth == 1:
            self._top_level(event, value)
        elif depth == 2 and self._key == "contacts":
            self._contact_start(event)
        elif depth == 3 and self._row is not None:
            self._contact_field(event, value)

    def _top_level(self, event: str, value: Any) -> None:
        if event in _CLOSE:
            return
        if event == "map_key":
            self._key = value
        elif self._key == "contacts":
            if event != "start_array":
                raise IntakeError(f"`contacts` must be a list: send {_SHAPE}")
            self._seen_contacts = True
        elif event in _OPEN:
            self._builder = ijson.ObjectBuilder()
            self._builder.event(event, value)
        else:
            self.upload.fields[self._key or ""] = value

    def _contact_start(self, event: str) -> None:
        if event == "start_map":
            self._row = {}
        elif event != "end_array":
            self.upload.reject(self.upload.count + 1, "must be an object like " + _SHAPE[14:-7])
            if event == "start_array":
                self._skip_to = 2

    def _contact_field(self, event: str, value: Any) -> None:
        row = self._row
        assert row is not None
        if event == "map_key":
            self._row_key = value
        elif event == "end_map":
            self._row = None
            self.upload.add(self.upload.count + 1, row)
        elif event in _OPEN:
            row[self._row_key or ""] = _NOT_TEXT
            self._skip_to = 3
        else:
            row[self._row_key or ""] = value


def _invalid(exc: Exception, where: str = "") -> IntakeError:
    said = exc.args[0] if exc.args else ""
    text = (said.decode(errors="replace") if isinstance(said, bytes) else str(said)).strip()
    first_line = text.splitlines()[0] if text else "it ends early"
    reason = first_line.removeprefix("parse error: ").removeprefix("lexical error: ")
    return IntakeError(f"the body is not valid JSON{where}: {reason}")


def from_json(body: bytes) -> Upload:
    """A whole JSON body at once (the route feeds it in chunks instead)."""
    parser = JsonUpload()
    parser.feed(body)
    return parser.finish()


def from_csv(data: bytes | IO[bytes]) -> Upload:
    """Line numbers are the file's: the header is line 1."""
    raw = io.BytesIO(data) if isinstance(data, bytes) else data
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    try:
        return _read_csv(text)
    finally:
        text.detach()


def _read_csv(text: io.TextIOWrapper) -> Upload:
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise IntakeError("the file is empty") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8() from exc
    except csv.Error as exc:
        raise IntakeError(f"the file is not readable CSV: {exc}") from exc
    names = [ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    if not any(names):
        raise IntakeError("the file is empty")
    missing = [f for f in ("first_name", "last_name", "domain") if f not in names]
    if missing:
        raise IntakeError(
            "the header row needs the columns first_name, last_name and domain; "
            f"missing: {', '.join(missing)}"
        )
    upload = Upload()
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                upload.add(reader.line_num, dict(zip(names, record, strict=False)))
    except UnicodeDecodeError as exc:
        raise _not_utf8(reader.line_num + 1) from exc
    except csv.Error as exc:
        raise IntakeError(f"the file is not readable CSV at line {reader.line_num}: {exc}") from exc
    return upload.finish()


def _not_utf8(line: int | None = None) -> IntakeError:
    where = f" (line {line})" if line else ""
    return IntakeError(f"the file is not UTF-8 text{where}; export it as CSV UTF-8")
