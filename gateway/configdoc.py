"""Generates the configuration reference (docs/configuration-reference.md) from the config model.

Run ``python -m gateway.configdoc > docs/configuration-reference.md``; a test checks the file is
current, so the reference cannot drift from the code.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config import GatewayConfig


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is typing.Literal:
        return " / ".join(f'"{a}"' for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if isinstance(annotation, type):
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "Path": "path",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        return "(see table)" if field.default_factory is not list else "[]"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        inner = typing.get_args(candidate)
        for c in (candidate, *inner):
            if isinstance(c, type) and issubclass(c, BaseModel):
                return c
    return None


def _walk(model: type[BaseModel], table: str, is_list: bool, out: list[str]) -> None:
    rows: list[str] = []
    nested: list[tuple[str, bool, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            child = f"{table}.{name}" if table else name
            nested.append((child, typing.get_origin(field.annotation) is list, sub))
            continue
        rows.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | "
            f"{(field.description or '').replace('|', '/')} |"
        )
    if rows:
        out.append(f"## `[[{table}]]`\n" if is_list else f"## `[{table}]`\n")
        doc = (model.__doc__ or "").strip().split("\n")[0]
        if doc:
            out.append(doc.split(": ", 1)[-1][:1].upper() + doc.split(": ", 1)[-1][1:] + "\n")
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        out.extend(rows)
        out.append("")
    for child, child_is_list, sub in nested:
        _walk(sub, child, child_is_list, out)


def render() -> str:
    """The whole reference as Markdown."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the configuration model by `make docs` (`python -m gateway.configdoc`);",
        "do not edit by hand. `configuration.md` explains the keys with an example.",
        "",
    ]
    _walk(GatewayConfig, "", False, out)
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
