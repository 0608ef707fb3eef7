"""A config field declared once: its default, bounds, choices, label and help, and how a YAML or
command-line value becomes its type.

:func:`setting` puts everything about a field in its dataclass field's ``metadata``: the
constraints (``rules``), the ``label`` the Setup form shows and the ``help`` that the form, the
CLI listing (``python -m lab settings``) and ``docs/settings.md`` show. Nothing here knows the
run config itself (:mod:`lab.config`) or any layer above it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from lab.arms import split_list


class ConfigError(ValueError):
    """A bad preset, key or value; the message names the field."""


MAX_INT = 2**53  # integers beyond exact float range are never a meaningful setting
SNIPPET = 60  # an error echoes at most this many characters of the value it rejects


def short_repr(value: Any) -> str:
    """``repr`` of a value cut to a short piece, so an error never echoes a large input."""
    text = repr(value)
    return text if len(text) <= SNIPPET else text[:SNIPPET] + f"… ({len(text)} characters)"


# ---- declaring a field -------------------------------------------------------------------------
# Constraints: ge / gt: lower bound (inclusive / exclusive); le / lt: upper bound (inclusive /
# exclusive); choices: the allowed values; zero: what 0 means, in the message ("0 (off) or more");
# items: the same kinds of constraint for every element of a list (or value of a mapping).
CONSTRAINTS = ("ge", "gt", "le", "lt", "choices", "zero", "items")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = None,
    label: str = "",
    help: str = "",
    **rules: Any,
) -> Any:
    """A dataclass field with its default (or ``factory``), its declared constraints, its
    label and its help text, all in ``metadata``."""
    unknown = set(rules) - set(CONSTRAINTS)
    if unknown:
        raise TypeError(f"unknown constraint(s): {', '.join(sorted(unknown))}")
    if "choices" in rules:
        rules["choices"] = tuple(rules["choices"])
    meta = {"rules": rules, "label": label, "help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def constraints(f: dataclasses.Field) -> dict[str, Any]:
    """The declared constraints of a dataclass field (``{}`` when it declares none)."""
    return dict(f.metadata.get("rules", {}))


def leaves(cls: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(config path, field, type) of every field of dataclass ``cls`` that is not a section,
    sections walked in declaration order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            yield from leaves(typ, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, typ


def type_text(typ: Any) -> str:
    """``list[float]`` -> "list of numbers": a field's type as the settings table says it."""
    names = {int: "integer", float: "number", str: "text", bool: "true/false"}
    origin = get_origin(typ)
    if origin is list:
        return f"list of {names[get_args(typ)[0]]}s"
    if origin is dict:
        return f"mapping to {names[get_args(typ)[1]]}s"
    return names.get(typ, str(typ))


def _default_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def rows_of(cls: Any) -> list[dict[str, str]]:
    """One row per field of the dataclass ``cls`` (sections walked), in declaration order: its
    key, label, type, default, what it allows and its help."""
    defaults = cls()
    rows = []
    for path, f, typ in leaves(cls):
        value: Any = defaults
        for part in path.split("."):
            value = getattr(value, part)
        r = constraints(f)
        allowed = f"each {rule_text(r['items'])}" if "items" in r else rule_text(r) or ""
        rows.append(
            {
                "key": path,
                "label": f.metadata.get("label", ""),
                "type": type_text(typ),
                "default": _default_text(value),
                "allowed": allowed.replace("must be ", ""),
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


# ---- checking a value against its constraints --------------------------------------------------


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(rules: Mapping[str, Any]) -> str | None:
    lo = rules.get("ge", rules.get("gt"))
    hi = rules.get("le", rules.get("lt"))
    if lo is None or hi is None:
        return None
    left = "[" if "ge" in rules else "("
    right = "]" if "le" in rules else ")"
    zero = f" (0: {rules['zero']})" if "zero" in rules and lo == 0 else ""
    return f"must be in {left}{_num(lo)}, {_num(hi)}{right}{zero}"


def rule_text(rules: Mapping[str, Any]) -> str | None:
    """What the declared ``rules`` ask of a value, as an error message says it ("must be ...")."""
    if "choices" in rules:
        return f"must be one of {', '.join(map(str, rules['choices']))}"
    if (both := _range_text(rules)) is not None:
        return both
    if "gt" in rules:
        return "must be positive" if rules["gt"] == 0 else f"must be more than {_num(rules['gt'])}"
    if "ge" in rules:
        if rules["ge"] == 0:
            zero = f" ({rules['zero']})" if "zero" in rules else ""
            return f"must be 0{zero} or more"
        return f"must be at least {_num(rules['ge'])}"
    hi = rules.get("le", rules.get("lt"))
    if hi is not None:
        return f"must be at most {_num(hi)}" if "le" in rules else f"must be below {_num(hi)}"
    return None


def broken(value: Any, rules: Mapping[str, Any]) -> str | None:
    """The message for a ``value`` that breaks its declared ``rules`` (None when it keeps them);
    ``items`` rules are not this value's own (see :func:`broken_items`)."""
    if "choices" in rules:
        ok = value in rules["choices"]
        return None if ok else f"{rule_text(rules)}, got {short_repr(value)}"
    ok = (
        ("ge" not in rules or value >= rules["ge"])
        and ("gt" not in rules or value > rules["gt"])
        and ("le" not in rules or value <= rules["le"])
        and ("lt" not in rules or value < rules["lt"])
    )
    return None if ok else rule_text(rules)


def broken_items(where: str, value: Any, rules: Mapping[str, Any]) -> tuple[str, str] | None:
    """(the element's path, the message) for the first element of a list or mapping ``value``
    that breaks the ``items`` rules; None when every element keeps them."""
    item_rules = rules.get("items")
    if not item_rules:
        return None
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in pairs:
        msg = broken(item, item_rules)
        if msg is not None:
            at = f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
            return at, f"{msg}, got {short_repr(item)}"
    return None


# ---- YAML text and command-line values -> the field's type ------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases, and without a key given twice: an alias
    bomb (a few hundred bytes that expand to gigabytes) is refused before it is expanded, and
    a repeated key is refused instead of silently taking its last value."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            raise ConfigError("YAML anchors and aliases (&name, *name) are not accepted")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it with its own error
                break
            if key in seen:
                raise ConfigError(
                    f"key {short_repr(key)} is given twice (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str) -> Any:
    """Parse YAML text as plain data, refusing anchors, aliases and a key given twice."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the declared type or raise naming ``where``."""
    origin = get_origin(typ)
    if origin is list:
        return _to_list(value, get_args(typ)[0], where)
    if origin is dict:
        return _to_dict(value, get_args(typ)[1], where)
    convert = _SCALARS.get(typ)
    if convert is None:
        raise ConfigError(f"{where}: unsupported type {typ}")
    return convert(value, where)


def _to_list(value: Any, item: Any, where: str) -> list:
    if isinstance(value, str) and where == "arms":
        value = split_list(value)  # a comma inside balora@L1,L2,L3 does not split arms
    elif isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {short_repr(value)}")
    return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]


def _to_dict(value: Any, item: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {short_repr(value)}")
    return {str(k): coerce(v, item, f"{where}.{short_repr(str(k))}") for k, v in value.items()}


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true or false, got {short_repr(value)}")


def _to_int(value: Any, where: str) -> int:
    out = None
    if isinstance(value, bool):
        out = None
    elif isinstance(value, int):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        digits = value.strip().lstrip("+-")
        out = int(value) if len(digits) <= len(str(MAX_INT)) else MAX_INT + 1
    if out is None:
        raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
    if abs(out) > MAX_INT:
        raise ConfigError(f"{where}: {short_repr(value)} is too large (at most {MAX_INT})")
    return out


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {short_repr(value)}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{where}: expected a finite number, got {short_repr(value)}")
    return out


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{where}: expected text, got {short_repr(value)}")
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
