"""The SCP conformance statement's tables are generated from the listener's declarations."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel
from pynetdicom import AllStoragePresentationContexts

from gateway.config import GatewayConfig
from gateway.conformancedoc import render, splice, uid_name
from gateway.ingest.receiver import STORAGE_SOP_CLASSES, STORAGE_SYNTAXES

DOCS = Path(__file__).resolve().parent.parent / "docs"
STATEMENT = DOCS / "conformance-statement.md"


def test_the_statement_tables_match_the_code() -> None:
    text = STATEMENT.read_text("utf-8")
    assert splice(text) == text, "run `make docs` and commit the result"


def test_every_storage_class_pynetdicom_knows_is_accepted_and_listed() -> None:
    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    assert set(STORAGE_SOP_CLASSES) == known
    assert len(known) > 128  # more than one A-ASSOCIATE-RQ could propose: no trimmed list
    table = render()
    for uid in known:
        assert f"| {uid_name(uid)} | {uid} |" in table


def test_every_accepted_transfer_syntax_is_listed() -> None:
    table = render()
    assert "1.2.840.10008.1.2.4.204" in STORAGE_SYNTAXES  # JPIP HTJ2K Referenced
    for n, uid in enumerate(STORAGE_SYNTAXES, 1):
        assert f"| {n} | {uid_name(uid)} | {uid} |" in table


def test_names_come_from_the_dictionary_or_pynetdicoms_keyword() -> None:
    assert uid_name("1.2.840.10008.5.1.4.1.1.30") == "Parametric Map Storage"
    # pydicom 3.0 has no name for it; pynetdicom's keyword gives one.
    assert uid_name("1.2.840.10008.5.1.4.1.1.66.7") == "Label Map Segmentation Storage"


def _keys(section: str) -> set[str]:
    """The keys of the config section ``section`` (an optional table or a list of tables)."""
    field = GatewayConfig.model_fields[section]
    annotation = field.annotation
    inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
    return {k for m in inner if issubclass(m, BaseModel) for k in m.model_fields}


def test_config_keys_the_conformance_statements_name_exist() -> None:
    for doc in ("conformance-statement.md", "conformance.md"):
        for section, key in re.findall(r"`\[(\w+)\] (\w+)`", (DOCS / doc).read_text("utf-8")):
            assert key in _keys(section), f"{doc}: [{section}] {key}"
