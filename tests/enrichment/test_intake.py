"""What a user uploads becomes contacts; every bad row is reported with line, field and reason."""

from __future__ import annotations

import json

import pytest

from roleferry.enrichment.intake import (
    MAX_ROWS,
    IntakeError,
    JsonUpload,
    TooManyRows,
    from_csv,
    from_json,
)


def test_bad_csv_rows_are_reported_and_good_ones_kept() -> None:
    data = (
        b"First Name,last_name,company_domain,title\n"
        b"Dana,Kowalski,acme.io,VP\n"
        b",Nobody,acme.io,\n"
        b"Sam,Lee,not a domain,\n"
        b"\n"
        b"Ann,Petrov,https://x.io/path,\n"
        b"Bo,Ek,ek.io,\n"
    )
    upload = from_csv(data)
    rows, rejected = upload.rows, upload.rejected
    assert [(r.line, r.first_name, r.domain) for r in rows] == [
        (2, "Dana", "acme.io"),
        (6, "Ann", "x.io"),
        (7, "Bo", "ek.io"),
    ]
    assert {(r["line"], r["field"]) for r in rejected} == {(3, "first_name"), (4, "domain")}
    assert all(r["reason"] for r in rejected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"name,email\nDana,d@a.io\n", "missing: first_name, last_name, domain"),
        (b"first_name,last_name,domain\n", "no contacts"),
        (b"first_name,last_name,domain\n,,\n1,,x\n", "no valid contacts"),
        (b"first_name,last_name,domain\n" + b"a,b,c.io\n" * 10_001, "more than 10000 contacts"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(IntakeError) as raised:
        from_csv(data)
    assert message in str(raised.value)


def test_json_rows_are_numbered_from_one() -> None:
    """Each contact is numbered in order; one that is not an object is one rejected row."""
    upload = from_json(
        json.dumps(
            {
                "contacts": [
                    {"first_name": "A", "last_name": "B", "domain": "ab.io"},
                    "nope",
                    {
                        "first_name": "C",
                        "last_name": "D",
                        "domain": "cd.io",
                        "linkedin_url": "https://evil.example/x",
                    },
                    {"first_name": {"nested": ["x"]}, "last_name": "F", "domain": "ef.io"},
                ],
                "callback_url": "https://example.com/hook",
            }
        ).encode()
    )
    assert [r.line for r in upload.rows] == [1]
    assert {(r["line"], r["field"]) for r in upload.rejected} == {
        (2, ""),
        (3, "linkedin_url"),
        (4, "first_name"),
    }
    assert upload.fields == {"callback_url": "https://example.com/hook"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"contacts": {"not": "a list"}}', "`contacts` must be a list"),
        (b'{"people": []}', 'send {"contacts"'),
        (b"[]", 'send {"contacts"'),
        (b'{"contacts": [],}', "not valid JSON"),
        (b'{"contacts": [{"first_name": "caf\xe9"}]}', "not valid JSON"),
        (b'{"contacts": [' + b"[" * 100_000, "nested deeper than 16 levels"),
        (b'{"contacts": []}', "no contacts"),
        (b'{"contacts": [{"first_name": "A"', "not valid JSON"),
    ],
)
def test_unusable_json_is_refused_with_a_reason(body: bytes, message: str) -> None:
    """Invalid, non-UTF-8, too deep or misshapen JSON is an IntakeError that says what to fix."""
    with pytest.raises(IntakeError) as raised:
        from_json(body)
    assert message in str(raised.value)


def test_the_row_cap_stops_the_parse_at_the_first_extra_row() -> None:
    """Row 10,001 is refused as it is read: the parser never sees the rest of the body."""
    parser = JsonUpload()
    row = b'{"first_name":"a","last_name":"b","domain":"ab.co"},'
    parser.feed(b'{"contacts":[' + row * MAX_ROWS)
    with pytest.raises(TooManyRows) as raised:
        parser.feed(row)
    assert f"more than {MAX_ROWS} contacts" in str(raised.value)
    csv_rows = b"first_name,last_name,domain\n" + b"a,b,ab.co\n" * (MAX_ROWS + 1)
    with pytest.raises(TooManyRows):
        from_csv(csv_rows)


def test_chunks_of_any_size_parse_the_same() -> None:
    """A body fed byte by byte, or with empty chunks between, gives the same rows."""
    body = b'{"contacts": [{"first_name": "A", "last_name": "B", "domain": "ab.io"}]}'
    parser = JsonUpload()
    for byte in body:
        parser.feed(b"")
        parser.feed(bytes([byte]))
    assert [(r.first_name, r.domain) for r in parser.finish().rows] == [("A", "ab.io")]


def test_a_body_of_tiny_values_is_refused_before_it_is_all_parsed() -> None:
    """Millions of tiny values inside one contact hit the value bound, not the memory."""
    parser = JsonUpload()
    parser.feed(b'{"contacts":[{"title":[')
    chunks = [b"0," * 32_768] * 100
    with pytest.raises(IntakeError) as raised:
        list(map(parser.feed, chunks))
    assert "more JSON values" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            b'{"contacts": [\n {"first_name": "A",\n  "domain": "acme.com",}\n]}',
            "line 3, column 24",
        ),
        (b'{"contacts": [1,]}', "line 1, column 17"),
        ('{"contacts": [\n"é", x]}'.encode(), "line 2, column 6"),
    ],
)
def test_a_syntax_error_is_located_by_line_and_column(body: bytes, where: str) -> None:
    """A trailing comma or a stray token says the line and column (in characters) to fix,
    however the body arrives in chunks."""

    def parse_in_chunks(size: int) -> None:
        parser = JsonUpload()
        for start in range(0, len(body), size):
            parser.feed(body[start : start + size])
        parser.finish()

    for size in (len(body), 5):
        with pytest.raises(IntakeError) as raised:
            parse_in_chunks(size)
        assert f"not valid JSON at {where}:" in str(raised.value)


def test_a_syntax_error_past_the_located_head_still_says_what_is_wrong() -> None:
    """Past the first MiB the error is not located (that would parse the body twice), but the
    reason is still given."""
    filler = b'{"first_name": "A", "last_name": "B", "domain": "acme.com"},' * 20_000
    with pytest.raises(IntakeError) as raised:
        from_json(b'{"contacts": [' + filler + b"]}")
    assert str(raised.value).startswith("the body is not valid JSON: ")
