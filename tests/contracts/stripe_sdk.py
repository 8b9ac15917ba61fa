"""What Stripe publishes about its objects, read from the installed `stripe` SDK (generated from
Stripe's OpenAPI description): each object's top-level fields and their types, and a checker
for JSON the simulator returns.

`python -m tests.contracts.stripe_sdk` rewrites tests/contracts/stripe/fields.json, the
reviewed snapshot of those field lists (`make contracts`).
"""

from __future__ import annotations

import decimal
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, ForwardRef, Literal, Union, get_args, get_origin

import stripe
from stripe import ListObject, StripeObject
from stripe._error_object import ErrorObject
from stripe._stripe_object import UntypedStripeObject

SNAPSHOT = Path(__file__).parent / "stripe" / "fields.json"

OBJECTS: dict[str, type[StripeObject]] = {
    "checkout.session": stripe.checkout.Session,
    "payment_intent": stripe.PaymentIntent,
    "charge": stripe.Charge,
    "refund": stripe.Refund,
    "event": stripe.Event,
    "item": stripe.LineItem,
    "price": stripe.Price,
}

# Published fields Stripe itself leaves out of a default answer, with the reason; the sandbox
# leaves them out too (docs/sandbox.md). Coverage is measured with and without them.
CONDITIONAL: dict[str, dict[str, str]] = {
    "checkout.session": {"line_items": "includable: only with expand[]=line_items"},
    "charge": {"refunds": "only with expand[]=refunds (API versions since 2022-11-15)"},
    "event": {
        "account": "Connect only: set on events of connected accounts",
        "context": "only on events of connected accounts and organizations",
    },
}


def published(cls: type[Any]) -> dict[str, Any]:
    """The annotated fields of an SDK class (its own, not the ClassVars)."""
    return {
        name: annotation
        for name, annotation in vars(cls).get("__annotations__", {}).items()
        if get_origin(annotation) is not ClassVar
    }


def _resolve(ref: ForwardRef) -> Any:
    name = ref.__forward_arg__
    return getattr(stripe, name, None) or getattr(stripe, name.removesuffix("Resource"), None)


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def type_errors(value: Any, annotation: Any, path: str) -> list[str]:
    """Why `value` is not of the SDK type `annotation` (empty when it is)."""
    if annotation is Any:
        return []
    if annotation is type(None):
        return [] if value is None else [f"{path}: {value!r:.40} is not null"]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        failures = [type_errors(value, arg, path) for arg in args]
        if any(not f for f in failures):
            return []
        nested = [f for f in failures if f and not f[0].endswith(f"is not {_kind(value)}")]
        return nested[0] if nested else [f"{path}: {_kind(value)} is not {render(annotation)}"]
    if origin is Literal:
        return (
            [] if value in args else [f"{path}: {value!r:.40} is not one of {render(annotation)}"]
        )
    if origin in (list, tuple):
        if not isinstance(value, list):
            return [f"{path}: {_kind(value)} is not list"]
        return [
            e for i, item in enumerate(value) for e in type_errors(item, args[0], f"{path}[{i}]")
        ]
    if origin is dict:
        return [] if isinstance(value, dict) else [f"{path}: {_kind(value)} is not object"]
    if origin is UntypedStripeObject or annotation is UntypedStripeObject:
        if not isinstance(value, dict):
            return [f"{path}: {_kind(value)} is not object"]
        inner = args[0] if args else Any
        return [e for k, v in value.items() for e in type_errors(v, inner, f"{path}.{k}")]
    if origin is ListObject or annotation is ListObject:
        return _list_errors(value, args[0] if args else Any, path)
    if isinstance(annotation, ForwardRef):
        target = _resolve(annotation)
        if isinstance(value, str):
            return []
        if target is None:
            return [] if isinstance(value, dict) else [f"{path}: {_kind(value)} is not object"]
        return object_errors(value, target, path)
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        return object_errors(value, annotation, path)
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{path}: {_kind(value)} is not bool"]
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {_kind(value)} is not int"]
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {_kind(value)} is not float"]
    if annotation in (str, decimal.Decimal):
        return [] if isinstance(value, str) else [f"{path}: {_kind(value)} is not str"]
    return [f"{path}: no rule for SDK type {annotation!r}"]


def _kind(value: Any) -> str:
    """The JSON kind of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def _list_errors(value: Any, item: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {_kind(value)} is not a list object"]
    errors = []
    if value.get("object") != "list":
        errors.append(f"{path}.object: {value.get('object')!r} is not 'list'")
    if set(value) != {"object", "data", "has_more", "url"}:
        errors.append(f"{path}: list keys {sorted(value)} are not object, data, has_more, url")
    errors += type_errors(value.get("has_more"), bool, f"{path}.has_more")
    errors += type_errors(value.get("url"), str, f"{path}.url")
    errors += type_errors(value.get("data"), list[item], f"{path}.data")  # type: ignore[valid-type]
    return errors


def object_errors(value: Any, cls: type[Any], path: str) -> list[str]:
    """A nested object: no field the SDK does not know, every non-nullable field present,
    every present field of its type."""
    if not isinstance(value, dict):
        return [f"{path}: {_kind(value)} is not object"]
    fields = published(cls)
    errors = [f"{path}.{k}: not a published field" for k in value if k not in fields]
    for name, annotation in fields.items():
        if name in value:
            errors += type_errors(value[name], annotation, f"{path}.{name}")
        elif not _is_optional(annotation) and name not in CONDITIONAL.get(
            getattr(cls, "OBJECT_NAME", ""), {}
        ):
            errors.append(f"{path}.{name}: missing (not nullable)")
    return errors


@dataclass
class Coverage:
    """How many of an object's published top-level fields an answer carries with their type."""

    kind: str
    published: int
    expected: int
    typed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conditional: set[str] = field(default_factory=set)

    @property
    def ratio(self) -> float:
        """Share of the fields Stripe returns by default that are present with their type."""
        return len(set(self.typed) - self.conditional) / self.expected

    @property
    def raw_ratio(self) -> float:
        """Share of every published field, conditional ones included."""
        return len(self.typed) / self.published


def coverage(value: dict[str, Any]) -> Coverage:
    """Checks one top-level object against the SDK class named by its `object`."""
    kind = value["object"]
    cls = OBJECTS[kind]
    fields = published(cls)
    conditional = CONDITIONAL.get(kind, {})
    result = Coverage(
        kind, len(fields), len(fields) - len(conditional), conditional=set(conditional)
    )
    result.unknown = sorted(k for k in value if k not in fields)
    for name, annotation in fields.items():
        if name not in value:
            if name not in conditional:
                result.missing.append(name)
            continue
        problems = type_errors(value[name], annotation, f"{kind}.{name}")
        if problems:
            result.errors += problems
        else:
            result.typed.append(name)
    return result


def error_errors(body: Any) -> list[str]:
    """A Stripe error answer: `{"error": ErrorObject}` with the SDK's fields and types."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return [f"error body: keys {sorted(body) if isinstance(body, dict) else body!r}"]
    return object_errors(body["error"], ErrorObject, "error")


def render(annotation: Any) -> str:
    """A compact, stable name for an SDK type (the snapshot's vocabulary)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin in (Union, types.UnionType):
        names: list[str] = []
        for arg in args:
            name = render(arg)
            if name not in names:
                names.append(name)
        return " | ".join(names)
    if origin is Literal:
        return "enum"
    if origin in (list, tuple):
        return f"list[{render(args[0])}]"
    if origin is UntypedStripeObject or annotation is UntypedStripeObject:
        return f"map[{render(args[0]) if args else 'any'}]"
    if origin is ListObject or annotation is ListObject:
        return f"list_object[{render(args[0]) if args else 'any'}]"
    if isinstance(annotation, ForwardRef):
        return f"ref {annotation.__forward_arg__}"
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        return f"object {annotation.__qualname__}"
    if annotation is decimal.Decimal:
        return "decimal"
    return getattr(annotation, "__name__", repr(annotation))


def snapshot() -> dict[str, Any]:
    """Every checked object's published fields and types, from the installed SDK."""
    return {
        "source": f"stripe (PyPI) {stripe.VERSION}, generated from Stripe's OpenAPI description",
        "objects": {
            kind: {name: render(annotation) for name, annotation in published(cls).items()}
            for kind, cls in OBJECTS.items()
        },
        "conditional": CONDITIONAL,
    }


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {SNAPSHOT} (stripe {stripe.VERSION})\n")
