"""Two source files never silently become one object (issue 10 A2), through the real daemon.

The same BMP (made from an image that ships with Debian) is dropped under two names whose
identity the file name pattern cannot use: a patient name over DICOM's 64 characters, and a
name that is not UTF-8. Each must stay its own held object, recording its file, and say why
its identity was refused; the first one's patient ID is offered to the operator as a hint.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP
from tests.test_daemon import drop
from tests.test_daemon_hostile import drop_folder_empty, gateway_cli

pytestmark = pytest.mark.peers

DEBIAN_IMAGE = Path("/usr/share/gitweb/static/git-logo.png")
LONG_NAME = "L" * 70


def bmp_bytes() -> bytes:
    with Image.open(DEBIAN_IMAGE) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "BMP")
    return out.getvalue()


@pytest.fixture
def gateway(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> Iterator[tuple[GatewayProcess, Path]]:
    pacs = storescp_factory(tmp_path / "pacs").start()
    config = write_config(tmp_path, pacs.port)
    gw = GatewayProcess(config).start()
    try:
        yield gw, config
    finally:
        gw.stop()
        pacs.stop()


def test_identical_files_with_unusable_names_stay_two_held_objects_naming_their_files(
    tmp_path: Path, gateway: tuple[GatewayProcess, Path]
) -> None:
    gw, config = gateway
    folder = tmp_path / "drop"
    data = bmp_bytes()
    drop(folder, f"P501_{LONG_NAME}_a.bmp", data)
    assert wait_until(lambda: drop_folder_empty(folder), 30), gw.log()
    drop(folder, f"P502_{LONG_NAME}_a.bmp", data)
    undecodable = os.fsdecode(b"P503_M\xfcller_a.bmp")  # Latin-1, as an old Windows share writes
    drop(folder, undecodable, data)
    assert wait_until(lambda: drop_folder_empty(folder), 30), gw.log()

    held = json.loads(gateway_cli(config, "held", "list", "--json"))
    assert len(held) == 3, held
    assert len({row["sop_instance_uid"] for row in held}) == 3
    by_file = {row["sources"][0]["file_name"]: row for row in held}
    assert set(by_file) == {
        f"P501_{LONG_NAME}_a.bmp",
        f"P502_{LONG_NAME}_a.bmp",
        "P503_M\\xfcller_a.bmp",
    }
    first = by_file[f"P501_{LONG_NAME}_a.bmp"]
    source = first["sources"][0]
    assert source["channel"] == "file" and source["source"] == "export"
    assert source["size"] == len(data)
    assert len(source["sha256"]) == 64 and source["arrived_at"] > 0
    assert source["hint_patient_id"] == "P501"
    assert first["held_reason"] == (
        "patient identity unknown: patient name from file name is 70 characters, DICOM allows 64"
    )
    assert by_file["P503_M\\xfcller_a.bmp"]["held_reason"] == (
        "patient identity unknown: patient name from file name holds bytes that are not UTF-8"
    )

    shown = json.loads(gateway_cli(config, "held", "show", str(first["object_id"])))
    assert shown["info"]["sources"] == first["sources"]
    assert "P501" not in gw.log()  # the hint is for the operator's views, never the log
    listed = gateway_cli(config, "held", "list")
    assert "from export: P503_M\\xfcller_a.bmp, arrived " in listed
    assert "file name identity not used: patient name from file name is 70 characters" in listed
