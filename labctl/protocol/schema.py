"""The JSON Schema (draft 2020-12) of the protocol format, generated from ``spec.OBJECTS``.

Editors (VS Code's YAML extension) use it to complete and check keys as scientists type.
The loader stays the authority: it checks units, days and cross-references the schema
cannot express.
"""

from __future__ import annotations

from typing import Any

from labctl.protocol.spec import OBJECTS, Field

_QTY = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*\S.*$"
_DAYS = r"^\s*-?\d+\s*(-\s*-?\d+\s*(/\s*\d+\s*)?)?$"
_TIME = r"^([01]?\d|2[0-3]):[0-5]\d$"


def _type(f: Field) -> dict[str, Any]:
    t = f.type
    if t == "string":
        return {"type": "string"}
    if t == "integer":
        return {"type": "integer"}
    if t == "number":
        return {"type": "number"}
    if t == "boolean":
        return {"type": "boolean"}
    if t == "quantity":
        return {"type": "string", "pattern": _QTY}
    if t == "quantity-or-param":
        return {
            "type": "string",
            "anyOf": [{"pattern": _QTY}, {"pattern": r"^\$[A-Za-z_][A-Za-z0-9_]*$"}],
        }
    if t == "days":
        day_item = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _DAYS}]}
        return {"anyOf": [day_item, {"type": "array", "items": day_item, "minItems": 1}]}
    if t == "time":
        return {"type": "string", "pattern": _TIME}
    if t == "medium":
        return {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "additionalProperties": {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%$"},
                },
            ]
        }
    if t == "wells":
        return {
            "anyOf": [
                {"const": "all"},
                {"type": "array", "items": {"type": "string", "pattern": "^[A-Pa-p][0-9]{1,2}$"}},
            ]
        }
    if t == "change":
        return {
            "anyOf": [
                {"enum": ["full", "half", "top-up", "none"]},
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            ]
        }
    if t.startswith("enum:"):
        return {"enum": t[5:].split("|")}
    if t.startswith("obj:"):
        return {"$ref": f"#/$defs/{t[4:]}"}
    if t.startswith("map:"):
        return {"type": "object", "additionalProperties": {"$ref": f"#/$defs/{t[4:]}"}}
    if t.startswith("list:"):
        return {"type": "array", "items": {"$ref": f"#/$defs/{t[5:]}"}}
    raise ValueError(f"unknown field type {t}")


def _object(name: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in OBJECTS[name]:
        s = _type(f)
        if f.doc:
            s = {**s, "description": f.doc}
        props[f.name] = s
    out: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "patternProperties": {"^x-": {}},
        "additionalProperties": False,
    }
    req = [f.name for f in OBJECTS[name] if f.required]
    if req:
        out["required"] = req
    return out


def json_schema() -> dict[str, Any]:
    root = _object("protocol")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://labctl.invalid/schema/protocol-v1.json",
        "title": "labctl differentiation protocol, format version 1",
        **root,
        "$defs": {n: _object(n) for n in OBJECTS if n != "protocol"},
    }
