"""The configuration reference in docs/ is generated from the model and must be current."""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig
from gateway.configdoc import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration-reference.md"


def test_reference_in_docs_matches_the_model() -> None:
    assert DOC.read_text("utf-8") == render(), "run `make docs` and commit the result"


def test_every_key_of_the_model_is_documented() -> None:
    text = render()
    sections = [
        m.annotation
        for m in GatewayConfig.model_fields.values()
        if hasattr(m.annotation, "model_fields")
    ]
    assert len(sections) == 3  # gateway, modality, ingest; destination is a list
    for model in sections:
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            if not hasattr(field.annotation, "model_fields") and "list" not in str(
                field.annotation
            ):
                assert f"`{name}`" in text
    for key in ("filename_pattern", "verify_hostname", "initial_seconds", "idle_release_seconds"):
        assert f"`{key}`" in text
