from __future__ import annotations

import zlib
from collections.abc import Callable
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
    handmade_tiff,
    machine_file,
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


def on_white(image: Image.Image, grey: bool = False) -> np.ndarray:
    """What the converter must produce for ``image``: Pillow's composite onto opaque white."""
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("L" if grey else "RGB"))


def test_grey_alpha_png_whose_content_is_all_in_its_alpha_stays_visible(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # A black glyph on transparent: grey 0 everywhere, the shape only in the alpha channel.
    la = np.zeros((24, 32, 2), dtype=np.uint8)
    la[4:20, 8:12, 1] = 255  # an opaque bar
    la[4:8, 8:24, 1] = 128  # a half-transparent one
    image = Image.fromarray(la, "LA")
    ds = convert_image(image, "glyph.png", tmp_path, out_dir, converter, make_item)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    pixels = ds.pixel_array
    assert pixels[0, 0] == 255  # transparent: the white background
    assert pixels[10, 9] == 0  # opaque black
    assert pixels[5, 20] == 127  # half of black over white
    np.testing.assert_array_equal(pixels, on_white(image, grey=True))
    assert ds.DerivationDescription == "transparent pixels composited onto white"


def test_rgba_is_composited_onto_white(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    rgba = noise((20, 30, 4))
    rgba[0, :, 3] = 0  # a fully transparent row
    ds = convert_image(Image.fromarray(rgba), "alpha.png", tmp_path, out_dir, converter, make_item)
    assert ds.SamplesPerPixel == 3
    pixels = ds.pixel_array
    np.testing.assert_array_equal(pixels, on_white(Image.fromarray(rgba)))
    assert (pixels[0] == 255).all()
    # And the arithmetic itself, independent of Pillow: c·a + 255·(1 − a), to within rounding.
    alpha = rgba[..., 3:].astype(float) / 255
    exact = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(pixels - exact).max() <= 1


def test_fully_opaque_alpha_is_dropped(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    rgba = noise((20, 30, 4))
    rgba[..., 3] = 255
    ds = convert_image(Image.fromarray(rgba), "opaque.png", tmp_path, out_dir, converter, make_item)
    np.testing.assert_array_equal(ds.pixel_array, rgba[..., :3])
    assert "DerivationDescription" not in ds


def palette_with_alpha() -> Image.Image:
    image = gradient_rgb().quantize(colors=16)
    image.info["transparency"] = bytes(range(0, 256, 16))  # per-entry alpha (PNG tRNS)
    return image


def palette_and_alpha_band() -> Image.Image:
    image = gradient_rgb().quantize(colors=16).convert("PA")
    image.putalpha(Image.fromarray(noise((60, 80), seed=4)))
    return image


def alpha_dropped(image: Image.Image, grey: bool) -> np.ndarray:
    """``image`` with its transparency thrown away (the old rule)."""
    if grey:
        return np.asarray(image.convert("LA"))[..., 0]
    return np.asarray(image.convert("RGBA"))[..., :3]


def _with_transparency(image: Image.Image, value: object) -> Image.Image:
    image.info["transparency"] = value
    return image


@pytest.mark.parametrize(
    ("make", "name", "grey"),
    [
        (palette_with_alpha, "palette-trns.png", False),
        (lambda: _with_transparency(gradient_rgb().quantize(colors=16), 3), "p-one.png", False),
        (lambda: _with_transparency(gray_image(), 7), "grey-trns.png", True),
        (lambda: _with_transparency(gradient_rgb(), (0, 0, 0)), "rgb-trns.png", False),
        (lambda: _with_transparency(Image.fromarray(np.eye(12, dtype=bool)), 0), "1bit.png", True),
        (lambda: Image.fromarray(noise((9, 13, 2)), "LA"), "la.tif", True),
        (lambda: Image.fromarray(noise((9, 13, 4)), "RGBA"), "rgba.tif", False),
        (palette_and_alpha_band, "pa.tif", False),
    ],
    ids=[
        "P-tRNS-alpha",
        "P-one-index",
        "L-tRNS",
        "RGB-tRNS",
        "1-tRNS",
        "LA-tiff",
        "RGBA-tiff",
        "PA",
    ],
)
def test_every_form_of_transparency_is_composited(
    make: Callable[[], Image.Image],
    name: str,
    grey: bool,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    image = make()
    save: dict[str, Any] = {}
    if "transparency" in image.info and name.endswith(".png"):
        save["transparency"] = image.info["transparency"]
    ds = convert_image(image, name, tmp_path, out_dir, converter, make_item, **save)
    read_back = Image.open(tmp_path / name)
    expected = on_white(read_back, grey=grey)
    assert (expected != alpha_dropped(read_back, grey)).any()  # the source is not opaque
    np.testing.assert_array_equal(ds.pixel_array, expected)


def test_sixteen_bit_grey_with_a_transparent_value_keeps_sixteen_bits(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    array = noise((25, 19), dtype=np.uint16)
    array[3, 4] = 1234  # the transparent value (PNG tRNS on 16-bit grey)
    image = Image.fromarray(array)
    ds = convert_image(
        image, "deep-trns.png", tmp_path, out_dir, converter, make_item, transparency=1234
    )
    assert (ds.BitsStored, ds.PhotometricInterpretation) == (16, "MONOCHROME2")
    np.testing.assert_array_equal(ds.pixel_array, np.where(array == 1234, 65535, array))


@pytest.mark.parametrize(
    ("samples", "extra", "mode"),
    [(2, 1, "La"), (4, 1, "RGBa"), (2, 2, "LA"), (4, 2, "RGBA")],
    ids=["grey-associated", "rgb-associated", "grey-unassociated", "rgb-unassociated"],
)
def test_tiff_extra_alpha_samples_are_composited(
    samples: int,
    extra: int,
    mode: str,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    values = noise((9, 13, samples))
    if extra == 1:  # associated (premultiplied) alpha: no colour exceeds its alpha
        values[..., :-1] = np.minimum(values[..., :-1], values[..., -1:])
    source = tmp_path / "extra.tif"
    source.write_bytes(handmade_tiff(values, photometric=1 if samples == 2 else 2, extra=extra))
    image = Image.open(source)
    assert image.mode in (mode, mode.replace("a", "A"))  # Pillow undoes RGBa itself
    out = out_dir / "extra.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    np.testing.assert_array_equal(ds.pixel_array, on_white(image, grey=samples == 2))


DEBIAN_ALPHA_PNGS = [
    ("/usr/share/cmake-3.25/Templates/Windows/StoreLogo.png", True),  # LA
    ("/usr/share/doc/python3/_static/file.png", False),  # RGBA icon
    ("/usr/share/doc/nodejs/osx_installer_logo.png", False),  # palette with per-entry alpha
    ("/usr/share/icons/locolor/16x16/apps/gvim.png", False),  # palette, one transparent index
    ("/usr/share/cmake-3.25/Templates/Windows/Logo.png", False),
]


@pytest.mark.parametrize(("path", "grey"), DEBIAN_ALPHA_PNGS, ids=lambda v: Path(str(v)).name)
def test_debian_pngs_with_transparency_arrive_as_they_look(
    path: str,
    grey: bool,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    source = machine_file(path, tmp_path)
    out = out_dir / "out.dcm"
    converter.convert(make_item(source), out)
    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    expected = on_white(Image.open(source), grey=grey)
    np.testing.assert_array_equal(ds.pixel_array, expected)
    # What dropping the alpha channel (the old rule) gives differs: content was lost.
    assert (alpha_dropped(Image.open(source), grey) != expected).any()


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
