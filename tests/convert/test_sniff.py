from __future__ import annotations

from pathlib import Path

import pytest

from gateway.convert.result import ConversionError
from gateway.convert.sniff import sniff_bytes, sniff_file


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"%PDF-1.7\n", "pdf"),
        (b"\x00" * 128 + b"DICM\x02\x00", "dicom"),
        (b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little"), "bmp"),
    ],
)
def test_kind_is_told_by_magic_bytes(head: bytes, kind: str) -> None:
    assert sniff_bytes(head) == kind


@pytest.mark.parametrize(
    "preamble_start",
    [
        b"II*\x00\x08\x00\x00\x00",  # dual-personality DICOM/TIFF (pydicom's CT_small.dcm)
        b"MM\x00*\x00\x00\x00\x08",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b"%PDF-1.7\n",
        b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little"),
    ],
)
def test_dicm_at_128_is_dicom_whatever_the_preamble_starts_with(preamble_start: bytes) -> None:
    # PS3.10 7.1: the preamble's content is free; only "DICM" at 128 says what the file is.
    head = preamble_start.ljust(128, b"\x00") + b"DICM"
    assert sniff_bytes(head) == "dicom"


def test_bm_prefix_alone_is_not_a_bitmap() -> None:
    assert sniff_bytes(b"BMW is a car maker, not a bitmap") is None


def test_extension_does_not_matter(tmp_path: Path) -> None:
    path = tmp_path / "report.jpg"
    path.write_bytes(b"%PDF-1.4\n")
    assert sniff_file(path) == "pdf"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        sniff_file(path)


def test_noise_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(range(7, 250)) * 40)
    with pytest.raises(ConversionError, match="unrecognised file type"):
        sniff_file(path)


def test_dataset_without_preamble_gets_a_precise_reason(tmp_path: Path) -> None:
    path = tmp_path / "image.dcm"
    path.write_bytes(b"\x08\x00\x16\x00UI\x1a\x00" + b"1" * 26)
    with pytest.raises(ConversionError, match="without the Part 10 preamble"):
        sniff_file(path)
