from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from gateway.convert.converter import Converter
from gateway.convert.jpeg import parse_jpeg
from gateway.convert.result import ConversionError
from tests.convert.builders import assert_valid_dicom, gradient_rgb
from tests.convert.conftest import ItemFactory


def jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def only_fragment(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    return frame


@pytest.mark.parametrize(
    ("options", "photometric"),
    [
        ({}, "YBR_FULL_422"),  # Pillow's default 4:2:0
        ({"subsampling": 0}, "YBR_FULL_422"),  # 4:4:4 is still YCbCr
    ],
)
def test_colour_jpeg_becomes_sc_with_the_bitstream_untouched(
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
    options: dict[str, object],
    photometric: str,
) -> None:
    data = jpeg_bytes(gradient_rgb(), quality=90, **options)
    source = tmp_path / "capture.jpg"
    source.write_bytes(data)
    out = out_dir / "out.dcm"

    result = converter.convert(make_item(source), out)

    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert result.sop_class_uid == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert result.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert result.kind == "jpeg"
    assert ds.PhotometricInterpretation == photometric
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsStored) == (60, 80, 3, 8)
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    fragment = only_fragment(out)
    assert fragment == data or fragment == data + b"\x00"
    # The object decodes to what Pillow decodes from the source.
    expected = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)
    assert np.abs(ds.pixel_array.astype(np.int16) - expected).max() <= 3


def test_grey_jpeg_is_monochrome2(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    data = jpeg_bytes(gradient_rgb().convert("L"))
    source = tmp_path / "grey.jpeg"
    source.write_bytes(data)
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.SamplesPerPixel == 1
    assert "PlanarConfiguration" not in ds
    fragment = only_fragment(out)
    assert fragment.rstrip(b"\x00") == data.rstrip(b"\x00")
    assert len(fragment) - len(data) in (0, 1)


def test_odd_length_jpeg_gets_one_trailing_zero(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    data = jpeg_bytes(gradient_rgb())
    if len(data) % 2 == 0:
        data += b"\xaa"  # bytes after EOI are kept as they came
    source = tmp_path / "odd.jpg"
    source.write_bytes(data)
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert only_fragment(out) == data + b"\x00"
    assert_valid_dicom(out)


def test_adobe_rgb_jpeg_is_labelled_rgb() -> None:
    data = jpeg_bytes(gradient_rgb())
    # Insert an Adobe APP14 segment with transform 0 (no colour transform) after SOI.
    app14 = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    info = parse_jpeg(data[:2] + app14 + data[2:])
    assert info.photometric == "RGB"


def test_extended_sequential_jpeg_uses_the_extended_syntax() -> None:
    data = bytearray(jpeg_bytes(gradient_rgb()))
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = 0xC1
    info = parse_jpeg(bytes(data))
    assert info.transfer_syntax_uid == "1.2.840.10008.1.2.4.51"


@pytest.mark.parametrize(
    ("marker", "reason"),
    [(0xC2, "progressive"), (0xC3, "lossless"), (0xC9, "arithmetic")],
)
def test_unsupported_jpeg_processes_are_refused_by_name(marker: int, reason: str) -> None:
    data = bytearray(jpeg_bytes(gradient_rgb()))
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = marker
    with pytest.raises(ConversionError, match=reason):
        parse_jpeg(bytes(data))


def test_real_progressive_jpeg_is_quarantined(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "prog.jpg"
    source.write_bytes(jpeg_bytes(gradient_rgb(), progressive=True))
    out = out_dir / "out.dcm"
    with pytest.raises(ConversionError, match="progressive"):
        converter.convert(make_item(source), out)
    assert not out.exists()


def test_truncated_jpeg_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    data = jpeg_bytes(gradient_rgb())
    source = tmp_path / "cut.jpg"
    source.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ConversionError, match="truncated"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_jpeg_signature_followed_by_noise_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    rng = np.random.default_rng(5)
    source = tmp_path / "noise.jpg"
    source.write_bytes(b"\xff\xd8\xff" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ConversionError, match="JPEG"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_corrupt_entropy_data_is_caught_by_the_trial_decode(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    data = bytearray(jpeg_bytes(gradient_rgb()))
    sos = data.index(b"\xff\xda")
    # Markers that may not appear inside entropy-coded data.
    data[sos + 40 : sos + 44] = b"\xff\xc4\xff\xd8"
    source = tmp_path / "broken.jpg"
    source.write_bytes(bytes(data))
    with pytest.raises(ConversionError):
        converter.convert(make_item(source), out_dir / "out.dcm")
