"""Forms built from the config model: one input per scalar field, from pydantic's model_fields.

Each field's type picks the input (number, yes/no, a choice, text), its description becomes the
help text and its default the placeholder. Lists and nested tables (TLS, retry) are left to the
raw editor. A posted form becomes the section's table again: keys left empty are removed (the
default applies), numbers that do not parse stay text so validation names the key and line.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from starlette.datastructures import FormData

from gateway.config import (
    DicomListenerSection,
    GatewaySection,
    ModalitySection,
    WebSection,
    WorklistSection,
)

# The sections edited as forms: [section] tables of scalars (their nested tables stay as they are).
SECTIONS: dict[str, type[BaseModel]] = {
    "gateway": GatewaySection,
    "modality": ModalitySection,
    "dicom_listener": DicomListenerSection,
    "worklist": WorklistSection,
    "web": WebSection,
}

Kind = Literal["text", "int", "float", "bool", "choice"]


@dataclass(frozen=True)
class FieldSpec:
    """One input of a section form."""

    name: str
    kind: Kind
    description: str
    default: str  # as shown ("" when there is none or it is unset)
    required: bool
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldValue:
    """A field with the value the file has now ("" when the key is absent)."""

    spec: FieldSpec
    value: str


def field_specs(model: type[BaseModel]) -> list[FieldSpec]:
    """The scalar fields of a config section, in declaration order."""
    specs = []
    for name, info in model.model_fields.items():
        kind, choices = _kind(info.annotation)
        if kind is None:
            continue
        default = info.default
        if default is PydanticUndefined or default is None:
            shown = ""
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = str(default)
        specs.append(
            FieldSpec(
                name=name,
                kind=kind,
                description=info.description or "",
                default=shown,
                required=info.is_required(),
                choices=choices,
            )
        )
    return specs


def _kind(annotation: Any) -> tuple[Kind | None, tuple[str, ...]]:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0]) if len(rest) == 1 else (None, ())
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin is Literal:
        return "choice", tuple(str(a) for a in args)
    if annotation is bool:
        return "bool", ("true", "false")
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation in (str, Path):
        return "text", ()
    return None, ()  # lists and nested tables: raw editor


def section_values(section: str, table: dict[str, Any]) -> list[FieldValue]:
    """The form of ``section`` filled from its table in the file."""
    out = []
    for spec in field_specs(SECTIONS[section]):
        raw = table.get(spec.name)
        if raw is None:
            value = ""
        elif isinstance(raw, bool):
            value = "true" if raw else "false"
        else:
            value = str(raw)
        out.append(FieldValue(spec, value))
    return out


def table_from_form(section: str, form: FormData, table: dict[str, Any]) -> dict[str, Any]:
    """The section's table with the form's values (keys the form does not show are kept)."""
    out = dict(table)
    for spec in field_specs(SECTIONS[section]):
        raw = str(form.get(spec.name, "")).strip()
        if raw == "":
            out.pop(spec.name, None)
            if spec.required:
                out[spec.name] = ""  # validation says it is missing, with the line
            continue
        out[spec.name] = _typed(spec, raw)
    return out


def _typed(spec: FieldSpec, raw: str) -> Any:
    if spec.kind == "bool":
        return raw == "true"
    if spec.kind == "int":
        try:
            return int(raw)
        except ValueError:
            return raw
    if spec.kind == "float":
        try:
            return float(raw)
        except ValueError:
            return raw
    if spec.kind == "choice" and spec.choices and all(c.isdigit() for c in spec.choices):
        return int(raw) if raw.isdigit() else raw
    return raw
