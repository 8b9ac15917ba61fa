"""Every CSV we write goes through here, so that no cell opens as a live formula.

A spreadsheet evaluates a cell that starts with `=`, `+`, `-` or `@` (and, after a tab or a
carriage return, what follows): a contact named `=HYPERLINK(...)` or a provider-built address
such as `+1@acme.io` would run on the machine of whoever opens the results. Following the OWASP
CSV-injection guidance, such a text cell is written with a single quote in front and otherwise
intact; quoting and doubled quotes (RFC 4180) come from the `csv` module, so a separator inside
a value cannot start a new cell. Numbers, negative ones included, stay numbers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_STARTS = frozenset("=+-@\t\r\n\0") | frozenset("＝＋－＠")  # noqa: RUF001
"""OWASP's characters, with line feed and NUL (ASVS), and their full-width forms, which
spreadsheets in East Asian locales read as the same operators."""
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""`-5` or `+1.5e3` is read as that number, and nothing runs: left as it is."""


def safe_cell(value: Any) -> Any:
    """A cell as a spreadsheet will show it, never run it: text whose first character, or first
    after leading spaces, starts a formula gets a `'` in front; anything else is unchanged."""
    if not isinstance(value, str) or not value or PLAIN_NUMBER.fullmatch(value):
        return value
    stripped = value.lstrip(" \u00a0\u3000")
    if stripped and stripped[0] in FORMULA_STARTS:
        return "'" + value
    return value


def write_csv(fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header and the rows, every cell made safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([safe_cell(name) for name in fieldnames])
    writer.writerows([safe_cell(row.get(name)) for name in fieldnames] for row in rows)
    return buffer.getvalue()


def neutralise_csv_text(text: str) -> str:
    """CSV text from elsewhere (a server of another version) rewritten with every cell made
    safe; idempotent, since a neutralised cell starts with `'`."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(
        [safe_cell(cell) for cell in row] for row in csv.reader(io.StringIO(text))
    )
    return buffer.getvalue()
