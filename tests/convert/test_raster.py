from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.result import ConversionError
from gateway.convert.uids import UidFactory
from tests.convert.builders import (
    assert_valid_dicom,
    gradient_rgb,
    gray_image,
    handmade_png,
    noise,
)
from tests.convert.conftest import ItemFactory, make_settings

SC = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def convert_image(
    image: Image.Image,
    name: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
    **save: Any,
) -> pydicom.Dataset:
    source = tmp_path / name
    image.save(source, **save)
    out = out_dir / f"{name}.dcm"
    result = converter.convert(make_item(source), out)
    assert result.transfer_syntax_uid == EXPLICIT_LE
    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == result.sop_class_uid
    return ds


@pytest.mark.parametrize("name", ["rgb.png", "rgb.bmp", "rgb.tif"])
def test_rgb_pixels_arrive_unchanged(
    name: str, tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    image = Image.fromarray(noise((33, 47, 3)))  # odd sizes: padding and row alignment
    ds = convert_image(image, name, tmp_path, out_dir, converter, make_item)
    assert ds.SOPClassUID == SC
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.PlanarConfiguration == 0
    assert ds.LossyImageCompression == "00"
    np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(tmp_path / name)))


@pytest.mark.parametrize("name", ["grey.png", "grey.bmp", "grey.tif"])
def test_8_bit_grey_stays_grey(
    name: str, tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    ds = convert_image(gray_image(31, 17), name, tmp_path, out_dir, converter, make_item)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BitsAllocated == 8
    np.testing.assert_array_equal(ds.pixel_array, np.asarray(gray_image(31, 17)))


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_16_bit_grey_keeps_every_bit(
    name: str, tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    array = noise((25, 19), dtype=np.uint16)
    ds = convert_image(Image.fromarray(array), name, tmp_path, out_dir, converter, make_item)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 16, 15)
    np.testing.assert_array_equal(ds.pixel_array, array)


def test_palette_image_is_expanded_to_rgb(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    image = gradient_rgb().quantize(colors=16)
    ds = convert_image(image, "pal.png", tmp_path, out_dir, converter, make_item)
    assert ds.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(ds.pixel_array, np.asarray(image.convert("RGB")))


def test_alpha_is_dropped_and_colour_kept(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    rgba = noise((20, 30, 4))
    rgba[..., 3] = 0  # fully transparent: colour values must still be kept, not composited
    ds = convert_image(Image.fromarray(rgba), "alpha.png", tmp_path, out_dir, converter, make_item)
    assert ds.SamplesPerPixel == 3
    np.testing.assert_array_equal(ds.pixel_array, rgba[..., :3])


def test_multi_page_colour_tiff_becomes_multi_frame_true_colour(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    pages = [Image.fromarray(noise((21, 13, 3), seed=s)) for s in range(3)]
    ds = convert_image(
        pages[0],
        "pages.tif",
        tmp_path,
        out_dir,
        converter,
        make_item,
        save_all=True,
        append_images=pages[1:],
    )
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.4"
    assert ds.NumberOfFrames == 3
    assert list(ds.PageNumberVector) == [1, 2, 3]
    np.testing.assert_array_equal(ds.pixel_array, np.stack([np.asarray(p) for p in pages]))


@pytest.mark.parametrize(
    ("dtype", "sop_class"),
    [(np.uint8, "1.2.840.10008.5.1.4.1.1.7.2"), (np.uint16, "1.2.840.10008.5.1.4.1.1.7.3")],
)
def test_multi_page_grey_tiff_becomes_multi_frame_grey(
    dtype: type,
    sop_class: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    arrays = [noise((15, 11), dtype=dtype, seed=s) for s in range(2)]
    pages = [Image.fromarray(a) for a in arrays]
    ds = convert_image(
        pages[0],
        "grey.tif",
        tmp_path,
        out_dir,
        converter,
        make_item,
        save_all=True,
        append_images=pages[1:],
    )
    assert ds.SOPClassUID == sop_class
    np.testing.assert_array_equal(ds.pixel_array, np.stack(arrays))


def test_jpeg_compressed_tiff_is_marked_as_lossy(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    ds = convert_image(
        gradient_rgb(), "jpeg.tif", tmp_path, out_dir, converter, make_item, compression="jpeg"
    )
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(tmp_path / "jpeg.tif")))


def test_pages_of_different_size_are_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "mixed.tif"
    gray_image(10, 10).save(source, save_all=True, append_images=[gray_image(12, 10)])
    with pytest.raises(ConversionError, match="pages differ"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_16_bit_colour_png_is_refused_rather_than_truncated(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    rows = b"".join(b"\x00" + noise((4 * 6,), seed=r).tobytes() for r in range(4))
    source = tmp_path / "deep-colour.png"
    source.write_bytes(handmade_png(4, 4, 16, 2, zlib.compress(rows)))
    with pytest.raises(ConversionError, match="16-bit colour"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_limit_on_pixels_refuses_before_decoding(
    tmp_path: Path,
    out_dir: Path,
    grouper: StudyGrouper,
    uids: UidFactory,
    make_item: ItemFactory,
) -> None:
    small = Converter(make_settings(max_image_pixels=1000), grouper, uids)
    source = tmp_path / "big.png"
    gray_image(40, 30).save(source)
    with pytest.raises(ConversionError, match="exceeds the limit"):
        small.convert(make_item(source), out_dir / "out.dcm")


def test_png_decompression_bomb_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # 60 000 × 60 000 grey pixels (3.6 Gpx) claimed by a tiny file.
    source = tmp_path / "bomb.png"
    source.write_bytes(handmade_png(60_000, 60_000, 8, 0, zlib.compress(b"\x00" * 1000)))
    with pytest.raises(ConversionError, match="decompression bomb"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_truncated_png_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "cut.png"
    Image.fromarray(noise((64, 64, 3))).save(source)
    source.write_bytes(source.read_bytes()[:3000])
    with pytest.raises(ConversionError, match="does not decode"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_scratch_file_is_not_left_behind(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "a.png"
    gray_image().save(source)
    converter.convert(make_item(source), out_dir / "out.dcm")
    assert [p.name for p in out_dir.iterdir()] == ["out.dcm"]
