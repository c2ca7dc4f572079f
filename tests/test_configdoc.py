"""The configuration reference in docs/ is generated from the model and must be current."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from gateway.config import GatewayConfig
from gateway.configdoc import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration-reference.md"


def test_reference_in_docs_matches_the_model() -> None:
    assert DOC.read_text("utf-8") == render(), "run `make docs` and commit the result"


def _models(annotation: object) -> list[type[BaseModel]]:
    """Every pydantic model inside an annotation (optional sections, lists of tables)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def test_every_key_of_every_section_is_documented() -> None:
    text = render()
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [GatewayConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            nested = _models(field.annotation)
            todo.extend(nested)
            if model is not GatewayConfig and not nested:
                assert f"`{name}`" in text, f"{model.__name__}.{name} is not documented"
    names = {m.__name__ for m in seen}
    assert {"WorklistSection", "DicomListenerSection", "SerialIngest", "WebSection"} <= names
