"""What a user uploads becomes contacts; every bad row is reported with line, field and reason."""

from __future__ import annotations

import pytest

from roleferry.enrichment.intake import IntakeError, from_csv, from_json


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
    rows, rejected = from_csv(data)
    assert [(r.line, r.first_name, r.domain) for r in rows] == [
        (2, "Dana", "acme.io"),
        (7, "Bo", "ek.io"),
    ]
    assert {(r["line"], r["field"]) for r in rejected} == {
        (3, "first_name"),
        (4, "domain"),
        (6, "domain"),
    }
    assert all(r["reason"] for r in rejected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"name,email\nDana,d@a.io\n", "missing: first_name, last_name, domain"),
        (b"first_name,last_name,domain\n", "no contacts"),
        (b"first_name,last_name,domain\n,,\n1,,x\n", "no valid contacts"),
        (b"first_name,last_name,domain\n" + b"a,b,c.io\n" * 10_001, "more than the 10000"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(IntakeError) as raised:
        from_csv(data)
    assert message in str(raised.value)


def test_json_rows_are_numbered_from_one() -> None:
    rows, rejected = from_json(
        [
            {"first_name": "A", "last_name": "B", "domain": "ab.io"},
            "nope",
            {
                "first_name": "C",
                "last_name": "D",
                "domain": "cd.io",
                "linkedin_url": "https://evil.example/x",
            },
        ]
    )
    assert [r.line for r in rows] == [1]
    assert {(r["line"], r["field"]) for r in rejected} == {
        (2, "first_name"),
        (2, "last_name"),
        (2, "domain"),
        (3, "linkedin_url"),
    }
    with pytest.raises(IntakeError):
        from_json({"not": "a list"})
