"""Hostile and huge inputs are handled in bounded memory (measured in a fresh interpreter)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

from tests.convert.builders import (
    SOP_UID,
    element,
    file_meta_bytes,
    handmade_png,
    nested_sequences,
    sc_dataset,
    write_part10,
)

REPO = Path(__file__).resolve().parents[2]
LIMIT_KIB = 100 * 1024  # peak resident growth allowed for one conversion


def probe(source: Path, workdir: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.convert.memprobe", str(source), str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def uid_value(uid: str) -> bytes:
    return uid.encode() + (b"\x00" if len(uid) % 2 else b"")


def dataset_head() -> bytes:
    """Explicit VR LE elements with the UIDs a forwarded file needs."""
    return (
        element(0x0008, 0x0016, b"UI", uid_value(SecondaryCaptureImageStorage))
        + element(0x0008, 0x0018, b"UI", uid_value(SOP_UID))
        + element(0x0020, 0x000D, b"UI", uid_value("1.2.3.4"))
        + element(0x0020, 0x000E, b"UI", uid_value("1.2.3.5"))
    )


def test_large_valid_dicom_is_copied_in_bounded_memory(tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    path = tmp_path / "large.dcm"
    header = (
        file_meta_bytes("1.2.840.10008.1.2.1", SecondaryCaptureImageStorage, SOP_UID)
        + dataset_head()
        + struct.pack("<HH", 0x7FE0, 0x0010)
        + b"OB\x00\x00"
        + struct.pack("<I", size)
    )
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + size)  # sparse: no disk or time spent on the zeros
    result = probe(path, tmp_path)
    assert result["reason"] is None
    assert (tmp_path / "out.dcm").stat().st_size == path.stat().st_size
    assert int(result["growth_kib"]) < LIMIT_KIB, result  # type: ignore[call-overload]


def test_huge_declared_length_does_not_allocate(tmp_path: Path) -> None:
    path = tmp_path / "liar.dcm"
    path.write_bytes(
        file_meta_bytes("1.2.840.10008.1.2.1", SecondaryCaptureImageStorage, SOP_UID)
        + dataset_head()
        + struct.pack("<HH", 0x0009, 0x1001)
        + b"OB\x00\x00"
        + struct.pack("<I", 0xFFFFFFF0)
        + b"\x00" * 64
    )
    result = probe(path, tmp_path)
    assert "declares 4294967280 bytes" in str(result["reason"])
    assert int(result["growth_kib"]) < LIMIT_KIB, result  # type: ignore[call-overload]


def test_deflate_bomb_is_not_inflated(tmp_path: Path) -> None:
    # 512 MiB of zeros behind a deflated Explicit VR LE header; the file is about 0.5 MiB.
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    path = tmp_path / "bomb.dcm"
    with path.open("wb") as f:
        f.write(
            file_meta_bytes(DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, SOP_UID)
        )
        f.write(body.compress(dataset_head()))
        zeros = 512 * 1024 * 1024
        f.write(
            body.compress(struct.pack("<HH", 0x0009, 0x1001) + b"OB\0\0" + struct.pack("<I", zeros))
        )
        chunk = b"\x00" * (16 * 1024 * 1024)
        for _ in range(zeros // len(chunk)):
            f.write(body.compress(chunk))
        f.write(body.flush())
    assert path.stat().st_size < 2 * 1024 * 1024
    result = probe(path, tmp_path)
    assert "deflated" in str(result["reason"])
    assert int(result["growth_kib"]) < LIMIT_KIB, result  # type: ignore[call-overload]


def test_deep_nesting_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "deep.dcm")
    path.write_bytes(path.read_bytes() + nested_sequences(500))
    result = probe(path, tmp_path)
    assert "nested deeper" in str(result["reason"])
    assert int(result["growth_kib"]) < LIMIT_KIB, result  # type: ignore[call-overload]


@pytest.mark.parametrize("side", [60_000, 20_000], ids=["3.6Gpx", "400Mpx"])
def test_png_decompression_bomb_does_not_allocate(side: int, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(handmade_png(side, side, 8, 2, zlib.compress(b"\x00" * 100_000, 9)))
    result = probe(path, tmp_path)
    assert "decompression bomb" in str(result["reason"])
    assert int(result["growth_kib"]) < LIMIT_KIB, result  # type: ignore[call-overload]


def test_the_probe_does_see_a_real_allocation(tmp_path: Path) -> None:
    """Control: a legitimate 16 Mpx colour image must show up as tens of MiB."""
    path = tmp_path / "big.png"
    Image.new("RGB", (4000, 4000), (10, 200, 30)).save(path)
    result = probe(path, tmp_path)
    assert result["reason"] is None
    assert int(result["growth_kib"]) > 40 * 1024, result  # type: ignore[call-overload]
