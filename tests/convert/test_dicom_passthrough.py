"""DICOM Part 10 input is forwarded byte for byte, after checks that pydicom alone would miss."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from gateway.convert.converter import Converter
from gateway.convert.dicomcheck import MAX_DEPTH, check_part10
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.identity import PatientIdentity
from tests.convert.builders import (
    SOP_UID,
    assert_valid_dicom,
    element,
    gradient_rgb,
    gray_image,
    nested_sequences,
    sc_dataset,
    write_part10,
)
from tests.convert.conftest import ItemFactory


@pytest.fixture
def lenient_writing() -> Iterator[None]:
    """Let pydicom write values it would refuse, to build broken inputs."""
    settings = pydicom_config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = previous


def forward(
    source: Path, out_dir: Path, converter: Converter, make_item: ItemFactory, **item: object
) -> tuple[Path, ConvertedObject]:
    out = out_dir / "out.dcm"
    return out, converter.convert(make_item(source, **item), out)


@pytest.mark.parametrize("kind", ["png", "jpg"])
def test_valid_dicom_is_forwarded_byte_for_byte(
    kind: str, tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # A conformant input: what this gateway itself makes (uncompressed and JPEG).
    image = tmp_path / f"src.{kind}"
    gradient_rgb().save(image)
    source = tmp_path / "input.dcm"
    made = converter.convert(make_item(image), source)
    assert_valid_dicom(source)

    out, result = forward(source, out_dir, converter, make_item, identity=PatientIdentity())

    assert out.read_bytes() == source.read_bytes()
    assert result.kind == "dicom"
    assert result.sop_instance_uid == made.sop_instance_uid
    assert result.study_instance_uid == made.study_instance_uid
    assert result.transfer_syntax_uid == made.transfer_syntax_uid
    assert result.held_reason is None  # carries its own identity
    assert_valid_dicom(out)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_other_native_syntaxes_are_walked(syntax: str, tmp_path: Path) -> None:
    path = write_part10(sc_dataset(), tmp_path / "in.dcm", syntax)
    facts = check_part10(path)
    assert facts.transfer_syntax_uid == syntax
    assert facts.sop_instance_uid == SOP_UID


def test_sequences_nested_up_to_the_limit_pass_and_pydicom_reads_them(tmp_path: Path) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "in.dcm")
    path.write_bytes(path.read_bytes() + nested_sequences(MAX_DEPTH))
    check_part10(path)
    ds = pydicom.dcmread(path)
    level = ds
    for _ in range(MAX_DEPTH - 1):
        level = level.ContentSequence[0]
    assert "ContentSequence" in level


def test_un_sequence_of_undefined_length_is_walked_as_implicit_vr(tmp_path: Path) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "in.dcm")
    inner = struct.pack("<HHI", 0x0009, 0x1002, 4) + b"ABCD"  # implicit VR inside
    private = (
        element(0x0009, 0x0010, b"LO", b"ACME")
        + struct.pack("<HH", 0x0009, 0x1001)
        + b"UN\x00\x00"
        + b"\xff\xff\xff\xff"
        + struct.pack("<HHI", 0xFFFE, 0xE000, len(inner))
        + inner
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    raw = path.read_bytes()
    # Private group 0009 goes between the groups 0008 and 0010 of the written dataset.
    cut = raw.index(b"\x10\x00\x10\x00PN")
    path.write_bytes(raw[:cut] + private + raw[cut:])
    assert check_part10(path).sop_instance_uid == SOP_UID


# --- hostile inputs: each must be refused with a reason --------------------------------------


def valid_file(tmp_path: Path) -> Path:
    return write_part10(sc_dataset(), tmp_path / "valid.dcm")


def refuse(path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory) -> str:
    out = out_dir / "out.dcm"
    with pytest.raises(ConversionError) as caught:
        converter.convert(make_item(path), out)
    assert not out.exists(), "a refused input leaves nothing in staging"
    return caught.value.reason


def test_cut_inside_the_meta_header(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = valid_file(tmp_path)
    # pydicom reads this as an empty dataset without complaint.
    path.write_bytes(path.read_bytes()[:170])
    assert "truncated" in refuse(path, out_dir, converter, make_item)


def test_cut_inside_the_pixel_data(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = valid_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-1000])
    reason = refuse(path, out_dir, converter, make_item)
    assert "(7FE0,0010)" in reason and "beyond the end of the file" in reason


def test_huge_declared_length_on_a_small_element(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "in.dcm")
    private = element(0x0009, 0x0010, b"LO", b"ACME") + element(0x0009, 0x1001, b"OB", b"\0" * 16)
    raw = path.read_bytes()
    cut = raw.index(b"\x10\x00\x10\x00PN")
    raw = raw[:cut] + private + raw[cut:]
    header = struct.pack("<HH", 0x0009, 0x1001) + b"OB\x00\x00"
    at = raw.index(header) + len(header)
    path.write_bytes(raw[:at] + struct.pack("<I", 0xFFFFFFF0) + raw[at + 4 :])
    reason = refuse(path, out_dir, converter, make_item)
    assert "(0009,1001) declares 4294967280 bytes" in reason


def test_deflated_syntax_is_refused_without_inflating(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = write_part10(sc_dataset(), tmp_path / "in.dcm", DeflatedExplicitVRLittleEndian)
    assert "deflated" in refuse(path, out_dir, converter, make_item)


def test_deeply_nested_sequences_are_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "in.dcm")
    path.write_bytes(path.read_bytes() + nested_sequences(500))
    assert path.stat().st_size < 20_000
    assert "nested deeper" in refuse(path, out_dir, converter, make_item)


def test_one_level_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    path = write_part10(sc_dataset(pixels=False), tmp_path / "in.dcm")
    path.write_bytes(path.read_bytes() + nested_sequences(MAX_DEPTH + 1))
    with pytest.raises(ConversionError, match="nested deeper"):
        check_part10(path)


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("SOPInstanceUID", "1.2.03.4", "invalid (meta )?SOP Instance UID"),
        ("SOPInstanceUID", "1.2." + "3" * 70, "invalid (meta )?SOP Instance UID"),
        ("StudyInstanceUID", "1.2.abc", "invalid Study Instance UID"),
        ("SOPClassUID", "1.2.840..1", "invalid (meta )?SOP Class UID"),
        ("StudyInstanceUID", None, "no Study Instance UID"),
        ("SeriesInstanceUID", "", "no Series Instance UID"),
    ],
)
@pytest.mark.usefixtures("lenient_writing")
def test_bad_uids_are_refused(
    attribute: str,
    value: str | None,
    reason: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    ds = sc_dataset()
    if value is None:
        delattr(ds, attribute)
    else:
        setattr(ds, attribute, value)
    path = write_part10(ds, tmp_path / "in.dcm")
    assert re.search(reason, refuse(path, out_dir, converter, make_item))


def test_meta_instance_uid_must_match_the_dataset(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = valid_file(tmp_path)
    raw = path.read_bytes()
    assert raw.count(SOP_UID.encode()) == 2  # once in the meta, once in the dataset
    other = SOP_UID[:-1] + "9"
    path.write_bytes(raw.replace(SOP_UID.encode(), other.encode(), 1))
    assert "differs" in refuse(path, out_dir, converter, make_item)


def test_unknown_transfer_syntax_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = valid_file(tmp_path)
    raw = path.read_bytes()
    explicit = b"1.2.840.10008.1.2.1\x00"
    path.write_bytes(raw.replace(explicit, b"1.2.3.4.5.6.7.8.9.0\x00", 1))
    assert "unknown transfer syntax" in refuse(path, out_dir, converter, make_item)


def test_dicm_without_a_dataset_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = tmp_path / "hollow.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM")
    assert "meta" in refuse(path, out_dir, converter, make_item)


def test_random_bytes_after_dicm_are_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = tmp_path / "noise.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + zlib.compress(bytes(range(256)) * 50))
    refuse(path, out_dir, converter, make_item)


def test_image_named_dcm_is_converted_by_content(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    path = tmp_path / "looks-like.dcm"
    gray_image().save(path, format="PNG")
    _, result = forward(path, out_dir, converter, make_item)
    assert result.kind == "png"
