"""Hypothesis strategies from the JSON schemas of docs/asyncapi.yaml (a small converter for
the subset the contract uses: $ref, const, enum, type, properties/required, pattern,
lengths, bounds, items, oneOf/anyOf, and allOf of if/then on a const discriminator), plus
mutations that break exactly one thing (a missing field, a wrong type, an extra field)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ASYNCAPI = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    return yaml.safe_load(ASYNCAPI.read_text())


def schema(name: str) -> dict[str, Any]:
    return document()["components"]["schemas"][name]


def _resolve(s: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in s:
        ref = s["$ref"]
        extra = {k: v for k, v in s.items() if k != "$ref"}
        node: Any = document()
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        s = {**node, **extra}
    return s


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _typed(kind: str, s: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "string":
        if "pattern" in s:
            return st.from_regex(s["pattern"], fullmatch=True)
        return st.text(min_size=s.get("minLength", 0), max_size=s.get("maxLength", 24))
    if kind == "integer":
        lo = s.get("minimum", -(2**40))
        hi = s.get("maximum", 2**53)
        return st.integers(lo, hi)
    if kind == "number":
        lo = s.get("minimum", s.get("exclusiveMinimum"))
        hi = s.get("maximum")
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in s)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(s.get("items", {}))
        return st.lists(items, min_size=s.get("minItems", 0), max_size=min(s.get("maxItems", 6), 6))
    if kind == "object":
        return _object(s)
    return ANY_JSON


def _object(s: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = s.get("properties", {})
    if not props:
        return st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4)
    required = set(s.get("required", []))
    optional = [k for k in props if k not in required]

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        out = {k: draw(from_schema(props[k])) for k in props if k in required}
        for k in optional:
            if draw(st.booleans()):
                out[k] = draw(from_schema(props[k]))
        return out

    return build()


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """allOf of plain object schemas -> one object schema (properties and required united)."""
    out: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in parts:
        part = _resolve(part)
        out["properties"].update(part.get("properties", {}))
        out["required"] += [r for r in part.get("required", []) if r not in out["required"]]
    return out


def _conditions(cond: dict[str, Any]) -> dict[str, list[Any]]:
    """{"properties": {"kind": {"const": x} | {"enum": [...]}}} -> {"kind": [values]}."""
    out = {}
    for key, c in cond.get("properties", {}).items():
        if "const" in c:
            out[key] = [c["const"]]
        elif "enum" in c:
            out[key] = list(c["enum"])
    return out


def from_schema(s: dict[str, Any]) -> st.SearchStrategy[Any]:
    s = _resolve(s)
    if "const" in s:
        return st.just(s["const"])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    for key in ("oneOf", "anyOf"):
        if key in s:
            return st.one_of(*[from_schema(x) for x in s[key]])
    plain = [b for b in s.get("allOf", []) if "if" not in b]
    if plain:
        merged = _merge([{k: v for k, v in s.items() if k not in ("allOf",)}, *plain])
        s = {**merged, "allOf": [b for b in s["allOf"] if "if" in b],
             **{k: s[k] for k in ("if", "then", "else") if k in s}}
    base: st.SearchStrategy[Any]
    kinds = s.get("type")
    if isinstance(kinds, list):
        base = st.one_of(*[_typed(k, s) for k in kinds])
    elif kinds:
        base = _typed(kinds, s)
    elif "properties" in s:
        base = _object(s)
    else:
        base = ANY_JSON
    branches = [b for b in s.get("allOf", []) if "if" in b and "then" in b]
    top = s if "if" in s else None
    if not branches and top is None:
        return base
    props = s.get("properties", {})

    @st.composite
    def conditional(draw: Any) -> Any:
        obj = draw(base)
        if not isinstance(obj, dict):
            return obj
        branch = draw(st.sampled_from(branches + [None])) if branches else None
        if branch is not None:  # steer the discriminator towards a branch
            for key, values in _conditions(branch["if"]).items():
                obj[key] = draw(st.sampled_from(values))
        for b in branches:  # then apply every branch whose condition holds
            if all(obj.get(k) in v for k, v in _conditions(b["if"]).items()):
                for key, sub in b["then"].get("properties", {}).items():
                    obj[key] = draw(from_schema(sub))
        if top is not None:  # if/then/else on the whole object (Ack: reason iff not ok)
            cond = _conditions(top["if"])
            holds = all(obj.get(k) in v for k, v in cond.items())
            if holds:
                for key in top["then"].get("required", []):
                    if key not in obj and key in props:
                        obj[key] = draw(from_schema(props[key]))
            else:
                for key in top.get("else", {}).get("not", {}).get("required", []):
                    obj.pop(key, None)
        return obj

    return conditional()


WRONG = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                  st.just([]), st.just({}), st.just(math.pi), st.just("x" * 70))


@st.composite
def mutated(draw: Any, strategy: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid message, or one with exactly one thing wrong."""
    obj = draw(strategy)
    if not isinstance(obj, dict) or not obj:
        return obj
    how = draw(st.sampled_from(["valid", "drop", "retype", "extra"]))
    key = draw(st.sampled_from(sorted(obj)))
    if how == "drop":
        obj.pop(key)
    elif how == "retype":
        obj[key] = draw(WRONG)
    elif how == "extra":
        obj[draw(st.text(min_size=1, max_size=8))] = draw(ANY_JSON)
    return obj
