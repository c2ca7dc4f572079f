from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from gateway.convert.converter import Converter
from gateway.convert.jpeg import parse_jpeg
from gateway.convert.result import ConversionError
from tests.convert.builders import (
    YBR_FULL_JPEG_ERROR,
    assert_valid_dicom,
    gradient_rgb,
    machine_file,
)
from tests.convert.conftest import ItemFactory
from tests.peers import dciodvfy, dcmdjpeg_pixels


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
        ({}, "YBR_FULL_422"),  # Pillow's default 4:2:0: YBR_FULL_422 per PS3.3 C.7.6.3.1.2
        ({"subsampling": 0}, "YBR_FULL"),  # 4:4:4: chroma not subsampled
        ({"subsampling": 1}, "YBR_FULL_422"),  # 4:2:2: chroma halved horizontally
        ({"subsampling": 2}, "YBR_FULL_422"),  # 4:2:0: halved both ways
    ],
    ids=["default", "444", "422", "420"],
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

    assert_valid_dicom(out, allowed_errors=(YBR_FULL_JPEG_ERROR,))
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


# An Adobe APP14 segment saying "transform 0": the components are not YCbCr.
ADOBE_NO_TRANSFORM = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def without_jfif(data: bytes) -> bytes:
    """``data`` without its JFIF APP0 segment (Pillow writes one right after SOI)."""
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"
    return data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]


def test_adobe_rgb_jpeg_is_labelled_rgb() -> None:
    data = without_jfif(jpeg_bytes(gradient_rgb()))
    info = parse_jpeg(data[:2] + ADOBE_NO_TRANSFORM + data[2:])
    assert info.photometric == "RGB"


def test_jfif_wins_over_an_adobe_transform_as_in_libjpeg() -> None:
    # libjpeg reads a JFIF stream as YCbCr whatever APP14 says, so the file shows as YCbCr
    # on every PC; labelling it RGB (the old rule) would show other colours than the file.
    data = jpeg_bytes(gradient_rgb(), subsampling=0)
    mixed = data[:2] + ADOBE_NO_TRANSFORM + data[2:]
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(mixed))), np.asarray(Image.open(io.BytesIO(data)))
    )
    assert parse_jpeg(mixed).photometric == "YBR_FULL"


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        # DCMTK dcmcjpeg outputs in pydicom's test corpus; their streams become .jpg files.
        ("SC_rgb_dcmtk_+eb+cy+s4.dcm", "YBR_FULL"),  # 4:4:4, JFIF
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "YBR_FULL_422"),  # 4:2:2
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "YBR_FULL_422"),  # 4:2:0
        ("SC_rgb_dcmtk_+eb+cr.dcm", "RGB"),  # components 'R', 'G', 'B', Adobe transform 0
        ("SC_jpeg_no_color_transform_2.dcm", "RGB"),  # Adobe transform 0, no JFIF
        ("examples_ybr_color.dcm", "YBR_FULL_422"),  # 4:2:0 from another encoder
    ],
)
def test_jpeg_streams_from_pydicoms_corpus_get_the_label_of_their_stream(
    name: str,
    photometric: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    original = pydicom.dcmread(get_testdata_file(name))
    frames = int(original.get("NumberOfFrames", 1) or 1)
    stream = next(generate_frames(original.PixelData, number_of_frames=frames))
    source = tmp_path / "from-corpus.jpg"
    source.write_bytes(stream[: stream.rindex(b"\xff\xd9") + 2])
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out, allowed_errors=(YBR_FULL_JPEG_ERROR,))
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == photometric
    # The object shows what the file shows: DCMTK's decode of it against Pillow's of the file.
    assert_shows_as_the_file(out, source, tmp_path)


def assert_shows_as_the_file(out: Path, source: Path, workdir: Path) -> None:
    # DCMTK, not pydicom: pydicom 3.0.2's Pillow path decodes a stream with an Adobe APP14
    # segment wrongly whatever the label (webtide_logo.jpg: magenta for white).
    expected = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)
    decoded = dcmdjpeg_pixels(out, workdir).astype(np.int16)
    if decoded.ndim == 2:
        decoded = np.repeat(decoded[..., None], 3, axis=-1)
    assert np.abs(decoded - expected).max() <= 3


def test_dciodvfy_reports_ybr_full_for_dcmtk_too() -> None:
    # Why YBR_FULL_JPEG_ERROR is allowed: DCMTK's own 4:4:4 output gets the same error.
    errors, _ = dciodvfy(Path(get_testdata_file("SC_rgb_dcmtk_+eb+cy+s4.dcm")))
    assert any(YBR_FULL_JPEG_ERROR in e for e in errors)


@pytest.mark.parametrize(
    ("adobe_transform", "model"), [(0, "CMYK"), (2, "YCCK")], ids=["cmyk", "ycck"]
)
def test_four_component_jpeg_is_refused_with_the_reason(
    adobe_transform: int,
    model: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    cmyk = jpeg_bytes(gradient_rgb().convert("CMYK"))  # Pillow writes Adobe APP14, transform 0
    at = cmyk.index(b"Adobe")
    data = cmyk[: at + 11] + bytes([adobe_transform]) + cmyk[at + 12 :]
    source = tmp_path / "print.jpg"
    source.write_bytes(data)
    out = out_dir / "out.dcm"
    with pytest.raises(ConversionError, match=f"{model} JPEG is not supported"):
        converter.convert(make_item(source), out)
    assert not out.exists()


# Debian's own JPEGs (skipped where a machine lacks them).
DEBIAN_JPEGS = [
    # baseline 4:4:4 JFIF, odd size, EXIF Orientation 1
    (
        "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/requests/ext/flower-of-life.jpg",
        "YBR_FULL",
    ),
    # baseline 4:4:4, JFIF and an Adobe APP14 (transform 1)
    (
        "/usr/lib/google-cloud-sdk/platform/google_appengine/google/appengine/tools/java/jetty12/"
        "jetty-home/modules/demo.d/root/images/webtide_logo.jpg",
        "YBR_FULL",
    ),
    # baseline 4:2:0, odd width
    (
        "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/pyparsing/docs/_static/"
        "pyparsingClassDiagram_1.5.2.jpg",
        "YBR_FULL_422",
    ),
]


@pytest.mark.parametrize(("path", "photometric"), DEBIAN_JPEGS, ids=lambda v: Path(str(v)).name)
def test_debian_jpegs_are_labelled_from_their_sampling(
    path: str,
    photometric: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    source = machine_file(path, tmp_path)
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out, allowed_errors=(YBR_FULL_JPEG_ERROR,))
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == photometric
    assert only_fragment(out).rstrip(b"\x00") == source.read_bytes().rstrip(b"\x00")
    assert_shows_as_the_file(out, source, tmp_path)


def exif_jpeg(image: Image.Image, orientation: int, **options: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(image, exif=exif.tobytes(), **options)


# A non-square, asymmetric picture: a bright block in the top-left corner, so every one of the
# eight EXIF orientations gives a different upright image.
def marked_image() -> Image.Image:
    array = np.asarray(gradient_rgb(48, 64)).copy()
    array[:8, :16] = 255
    return Image.fromarray(array)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_jpeg_with_exif_orientation_is_turned_upright_losslessly(
    orientation: int,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    source = tmp_path / "phone.jpg"
    source.write_bytes(exif_jpeg(marked_image(), orientation, quality=95))
    out = out_dir / "out.dcm"
    result = converter.convert(make_item(source), out)

    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert result.kind == "jpeg"
    assert result.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.LossyImageCompression == "01"  # lossy once, in the source; not again
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert f"EXIF Orientation {orientation}" in ds.DerivationDescription
    # Exactly the upright pixels a viewer shows for the file (Pillow's decode, turned).
    upright = np.asarray(ImageOps.exif_transpose(Image.open(source)))
    assert (ds.Rows, ds.Columns) == upright.shape[:2]
    np.testing.assert_array_equal(ds.pixel_array, upright)
    # The same drop converts to the same instance (the UID does not depend on the path taken).
    again = converter.convert(make_item(source), out_dir / "again.dcm")
    assert again.sop_instance_uid == result.sop_instance_uid


def test_jpeg_with_exif_orientation_1_keeps_its_bitstream(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    data = exif_jpeg(marked_image(), 1)
    source = tmp_path / "upright.jpg"
    source.write_bytes(data)
    out = out_dir / "out.dcm"
    assert converter.convert(make_item(source), out).transfer_syntax_uid.endswith(".4.50")
    assert only_fragment(out).rstrip(b"\x00") == data.rstrip(b"\x00")


def test_grey_jpeg_with_exif_orientation_stays_grey(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "grey.jpg"
    source.write_bytes(exif_jpeg(marked_image().convert("L"), 6))
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    upright = np.asarray(ImageOps.exif_transpose(Image.open(source)))
    np.testing.assert_array_equal(ds.pixel_array, upright)


def test_unreadable_exif_is_ignored_as_viewers_ignore_it() -> None:
    data = jpeg_bytes(gradient_rgb())
    app1 = b"Exif\x00\x00" + b"\x00" * 10  # not a TIFF structure
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    assert parse_jpeg(data[:2] + segment + data[2:]).orientation == 1


def test_the_first_exif_segment_gives_the_orientation_as_for_viewers() -> None:
    # Pillow (and so the decode path's exif_transpose) reads the first Exif APP1; a second
    # one (an editor appending its own) must not make the gateway think the image upright.
    data = exif_jpeg(marked_image(), 6)
    exif = Image.Exif()
    exif[0x0112] = 1
    app1 = b"Exif\x00\x00" + exif.tobytes()
    second = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    sos = data.index(b"\xff\xda")
    doubled = data[:sos] + second + data[sos:]
    assert Image.open(io.BytesIO(doubled)).getexif()[0x0112] == 6
    assert parse_jpeg(doubled).orientation == 6


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
