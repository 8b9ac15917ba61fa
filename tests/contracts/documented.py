"""Checks answers of providers without a machine-readable description (Apollo, Hunter, Clay)
against fixtures written from their documentation's example responses: field names and JSON
types, one file per route under tests/contracts/<vendor>/.

A fixture's `response` mirrors the documented example: an object lists its fields, a list
holds one item shape (an empty list: items not described), and a leaf names its JSON type
(`string`, `integer`, `number`, `boolean`, `any` where the example shows only null, or several
joined by `|`). Examples cannot show which fields may be null, so null passes every leaf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def fixture(vendor: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / vendor / f"{name}.json").read_text())
    return data


@dataclass
class Check:
    """Problems found (unknown fields, wrong types) and the documented fields seen or not."""

    errors: list[str] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    absent: set[str] = field(default_factory=set)

    @property
    def coverage(self) -> float:
        """Share of the documented fields (at every level reached) that the answer carries."""
        known = len(self.present | self.absent)
        return len(self.present) / known if known else 1.0

    def missing(self) -> list[str]:
        return sorted(self.absent - self.present)


def check(value: Any, shape: Any, path: str = "$", result: Check | None = None) -> Check:
    """Walks `value` against a fixture shape, collecting problems and coverage."""
    result = Check() if result is None else result
    if value is None:
        return result
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            result.errors.append(f"{path}: {type(value).__name__} is not an object")
            return result
        for key in value:
            if key not in shape:
                result.errors.append(f"{path}.{key}: not a documented field")
        for key, inner in shape.items():
            where = f"{path}.{key}"
            if key in value:
                result.present.add(where)
                check(value[key], inner, where, result)
            else:
                result.absent.add(where)
        return result
    if isinstance(shape, list):
        if not isinstance(value, list):
            result.errors.append(f"{path}: {type(value).__name__} is not a list")
        elif shape:
            for item in value:
                check(item, shape[0], f"{path}[]", result)
        return result
    kinds = shape.split("|")
    if "any" in kinds:
        return result
    allowed = tuple(t for k in kinds for t in _TYPES[k])
    wrong = not isinstance(value, allowed) or (isinstance(value, bool) and "boolean" not in kinds)
    if wrong:
        result.errors.append(f"{path}: {type(value).__name__} is not {shape}")
    return result
