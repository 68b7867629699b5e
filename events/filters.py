"""CloudEvents Subscriptions API filters: which events a trigger or a wait reacts to.

    {"exact":  {"type": "com.shop.order.created"}}
    {"prefix": {"source": "shop/"}}
    {"suffix": {"subject": ".pdf"}}
    {"all": [filter, ...]}   {"any": [filter, ...]}   {"not": filter}

A dialect's object may name several attributes; all must match. Attributes are the context
attributes (`id`, `source`, `type`, `subject`, `time`, `datacontenttype`, `dataschema`,
`specversion`) and extensions by name. An absent attribute never matches `exact`/`prefix`/
`suffix`. `sql` is not supported and is refused with a clear error, like any unknown dialect.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from events.envelope import CloudEvent

DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not")
_CORE = ("id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "specversion")


class FilterError(ValueError):
    """A filter that is not valid; the message says where (`on[1].all[0]: ...`)."""


def check_filter(spec: Any, where: str = "filter") -> None:
    """Raise FilterError unless `spec` is a valid filter."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise FilterError(
            f"{where}: a filter is an object with exactly one dialect ({', '.join(DIALECTS)})"
        )
    [(dialect, body)] = spec.items()
    if dialect == "sql":
        raise FilterError(f"{where}: the 'sql' dialect is not supported")
    if dialect not in DIALECTS:
        raise FilterError(
            f"{where}: unknown filter dialect {dialect!r} (use one of: {', '.join(DIALECTS)})"
        )
    if dialect in ("exact", "prefix", "suffix"):
        _check_attributes(body, f"{where}.{dialect}")
    elif dialect in ("all", "any"):
        if not isinstance(body, list) or not body:
            raise FilterError(f"{where}.{dialect}: expected a non-empty list of filters")
        for index, child in enumerate(body):
            check_filter(child, f"{where}.{dialect}[{index}]")
    else:
        check_filter(body, f"{where}.not")


def _check_attributes(body: Any, where: str) -> None:
    if not isinstance(body, Mapping) or not body:
        raise FilterError(f"{where}: expected an object of attribute -> string")
    for name, value in body.items():
        if not isinstance(value, str):
            raise FilterError(f"{where}.{name}: value must be a string")


def attribute(event: CloudEvent, name: str) -> str | None:
    if name in _CORE:
        value = getattr(event, name)
        return None if value is None else str(value)
    return event.extensions.get(name)


def matches(spec: Mapping[str, Any], event: CloudEvent) -> bool:
    """Whether `event` passes the (already checked) filter `spec`."""
    [(dialect, body)] = spec.items()
    if dialect == "all":
        return all(matches(child, event) for child in body)
    if dialect == "any":
        return any(matches(child, event) for child in body)
    if dialect == "not":
        return not matches(body, event)
    for name, expected in body.items():
        actual = attribute(event, name)
        if actual is None:
            return False
        if dialect == "exact" and actual != expected:
            return False
        if dialect == "prefix" and not actual.startswith(expected):
            return False
        if dialect == "suffix" and not actual.endswith(expected):
            return False
    return True
