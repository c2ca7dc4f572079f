"""PNG, BMP and TIFF files as Secondary Capture objects with lossless, uncompressed pixels.

8- and 16-bit grey stay grey, colour becomes RGB, palette images are expanded to RGB. Several
pages or frames (multi-page TIFF, animated PNG) become one multi-frame object. Sizes are checked
from the headers before anything is decoded, so a decompression bomb is refused without
allocating its pixels; frames are decoded one at a time into a scratch file that pydicom streams
into Pixel Data.

Transparency (DICOM SC has none): a frame whose alpha is anywhere below fully opaque is
composited onto white (:data:`BACKGROUND`), as a browser or a printout shows it, so content
drawn only in the alpha channel (a black glyph on transparent, a grey-alpha PNG whose grey is
all 0) stays visible. This covers every form Pillow reads: an alpha channel (LA, La, PA, RGBA,
RGBa: premultiplied alpha is undone by Pillow first), a palette with per-entry alpha (PNG tRNS),
and one transparent grey or colour value (PNG tRNS on grey, RGB, 1-bit and 16-bit grey; 16-bit
grey keeps all 16 bits, its transparent value becomes 65535). A fully opaque alpha channel
carries nothing and is dropped. A composited object says so in Derivation Description.

A JPEG goes through here only when it must be re-oriented (see :mod:`gateway.convert.jpeg`): it
is decoded once, turned as its EXIF Orientation says, and stored uncompressed, flagged as lossy
compressed before (ISO_10918_1) like a JPEG-compressed TIFF.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import (
    BmpImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)
from pydicom.dataset import Dataset
from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from gateway.convert.result import ConversionError

Layout = Literal["gray8", "gray16", "rgb8"]

MAX_DIMENSION = 65535  # Rows and Columns are US
_LAYOUT_OF_MODE: dict[str, Layout] = {
    "1": "gray8",
    "L": "gray8",
    "LA": "gray8",
    "P": "rgb8",
    "PA": "rgb8",
    "RGB": "rgb8",
    "RGBA": "rgb8",
    "RGBX": "rgb8",
    "La": "gray8",
    "RGBa": "rgb8",
    "I;16": "gray16",
    "I;16L": "gray16",
    "I;16B": "gray16",
    "I;16N": "gray16",
    "I": "gray16",  # 32-bit integer pixels: accepted only when every value fits 16 bits
}

# Pillow's format classes are used directly: Image.open() would apply its process-wide
# MAX_IMAGE_PIXELS, while the limit here is the converter's own setting.
_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
}

BACKGROUND = 255  # white, in every sample: what transparent pixels are composited onto
_GRAY16_WHITE = 0xFFFF
COMPOSITED = "transparent pixels composited onto white"
_EXIF_ORIENTATION = 0x0112  # TIFF/EXIF tag 274


@dataclass(frozen=True)
class RasterPixels:
    """Decoded frames, little endian, frame after frame in ``pixel_file``."""

    layout: Layout
    rows: int
    columns: int
    frames: int
    pixel_file: IO[bytes]
    lossy_method: str | None = None  # the source was lossy compressed (a JPEG-in-TIFF)
    derivation: str | None = None  # what was done to the pixels beyond decoding, if anything


@contextmanager
def decode_raster(
    path: Path, kind: str, max_pixels: int, scratch_dir: Path
) -> Iterator[RasterPixels]:
    """Decode ``path`` into a scratch file removed on exit; ConversionError if unusable."""
    opener = _OPENERS[kind]
    with path.open("rb") as source, tempfile.TemporaryFile(dir=scratch_dir) as scratch:
        try:
            # Pillow reports odd but readable files through warnings; they are not errors here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                head = source.read(32)
                source.seek(0)
                image = opener(source)
                layout, frames = _survey(image, kind, max_pixels, head)
                composited = False
                size = image.size
                for index in range(frames):
                    image.seek(index)
                    frame, flattened = _flatten(_oriented(image, kind), layout)
                    composited = composited or flattened
                    size = frame.size  # turned upright, a JPEG may swap width and height
                    scratch.write(_frame_bytes(frame, layout))
        except ConversionError:
            raise
        # Any failure of a decoder on untrusted bytes means the file is unreadable.
        except Exception as exc:
            raise ConversionError(f"{kind.upper()} does not decode: {exc}") from exc
        if scratch.tell() % 2:
            scratch.write(b"\x00")  # Pixel Data has even length (PS3.5 7.1.1)
        scratch.seek(0)
        width, height = size
        yield RasterPixels(
            layout,
            height,
            width,
            frames,
            scratch,
            _lossy_method(image),
            _derivation(image, kind, composited),
        )


def _survey(
    image: ImageFile.ImageFile, kind: str, max_pixels: int, head: bytes
) -> tuple[Layout, int]:
    """Layout and frame count from the headers alone; every frame must look alike."""
    frames = int(getattr(image, "n_frames", 1))
    size, mode = image.size, image.mode
    total = 0
    for index in range(frames):
        image.seek(index)
        if image.size != size or image.mode != mode:
            raise ConversionError("pages differ in size or colour type")
        width, height = image.size
        if width < 1 or height < 1 or width > MAX_DIMENSION or height > MAX_DIMENSION:
            raise ConversionError(f"image size {width}×{height} is not possible in DICOM")
        total += width * height
        if total > max_pixels:
            raise ConversionError(
                f"image of {total} pixels exceeds the limit of {max_pixels} "
                "(possible decompression bomb)"
            )
    layout = _LAYOUT_OF_MODE.get(mode)
    if layout is None:
        raise ConversionError(f"{kind.upper()} colour mode {mode!r} is not supported")
    _refuse_precision_loss(image, kind, layout, head)
    return layout, frames


def _refuse_precision_loss(
    image: ImageFile.ImageFile, kind: str, layout: Layout, head: bytes
) -> None:
    # Pillow reads 16-bit colour as 8-bit colour; that would silently alter the image.
    # PNG's IHDR is the first chunk: bit depth at byte 24, colour type at byte 25.
    if kind == "png" and (len(head) < 26 or (head[24] == 16 and head[25] != 0)):
        raise ConversionError("16-bit colour or alpha PNG is not supported (precision loss)")
    if kind == "tiff" and isinstance(image, TiffImagePlugin.TiffImageFile):
        bits = image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if any(int(b) > 8 for b in bits) and layout != "gray16":
            raise ConversionError("TIFF with more than 8 bits per colour sample is not supported")


def _lossy_method(image: ImageFile.ImageFile) -> str | None:
    # TIFF compression 6 and 7 are JPEG: the pixels were lossy compressed before they got here,
    # which Lossy Image Compression must say even though they are stored uncompressed now.
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        return "ISO_10918_1"
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return None
    return "ISO_10918_1" if image.tag_v2.get(TiffImagePlugin.COMPRESSION) in (6, 7) else None


def _oriented(image: Image.Image, kind: str) -> Image.Image:
    # Only a JPEG is turned by its EXIF Orientation (it comes here for nothing else).
    if kind != "jpeg":
        return image
    return ImageOps.exif_transpose(image)


def _derivation(image: Image.Image, kind: str, composited: bool) -> str | None:
    """Derivation Description: what was done to the pixels beyond decoding them, or None."""
    steps = []
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if kind == "jpeg" else 1
    if orientation != 1:
        steps.append(f"decoded and turned upright (EXIF Orientation {orientation})")
    if composited:
        steps.append(COMPOSITED)
    return "; ".join(steps) or None


def _flatten(image: Image.Image, layout: Layout) -> tuple[Image.Image, bool]:
    """The frame without transparency, and whether any pixel was composited onto white."""
    if not image.has_transparency_data:
        return image, False
    if layout == "gray16":
        # A 16-bit grey PNG's tRNS names one transparent value; Pillow's RGBA conversion
        # would cut the image to 8 bits, so the value is replaced here, all 16 bits kept.
        values = np.asarray(image)
        transparent = values == image.info["transparency"]
        if not transparent.any():
            return image, False
        return Image.fromarray(np.where(transparent, _GRAY16_WHITE, values).astype(np.uint16)), True
    # convert() applies tRNS and palette alpha and undoes premultiplied alpha (La only via LA).
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    lowest_alpha, _ = rgba.getchannel("A").getextrema()
    if lowest_alpha == 255:
        return rgba.convert("L" if layout == "gray8" else "RGB"), False  # opaque alpha: dropped
    white = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    flat = Image.alpha_composite(white, rgba)
    # Grey stays grey: R = G = B after compositing grey, and Pillow's L weights sum to one.
    return flat.convert("L" if layout == "gray8" else "RGB"), True


def _frame_bytes(image: Image.Image, layout: Layout) -> bytes:
    if layout == "gray8":
        frame = image if image.mode == "L" else image.convert("L")
        return np.asarray(frame, dtype=np.uint8).tobytes()
    if layout == "rgb8":
        frame = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(frame, dtype=np.uint8).tobytes()
    values = np.asarray(image)
    if values.dtype.kind == "i" and (values.min() < 0 or values.max() > 0xFFFF):
        raise ConversionError("integer pixel values outside 0..65535 are not supported")
    return values.astype("<u2").tobytes()


def raster_sop_class(pixels: RasterPixels) -> str:
    """SC Image Storage for one frame; the multi-frame SC class of the layout for several."""
    if pixels.frames == 1:
        return str(SecondaryCaptureImageStorage)
    return str(
        {
            "gray8": MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
            "gray16": MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            "rgb8": MultiFrameTrueColorSecondaryCaptureImageStorage,
        }[pixels.layout]
    )


def add_raster_image(ds: Dataset, pixels: RasterPixels) -> None:
    """Image Pixel (and, for several frames, Multi-frame) attributes and the buffered pixels."""
    color = pixels.layout == "rgb8"
    bits = 16 if pixels.layout == "gray16" else 8
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.Rows = pixels.rows
    ds.Columns = pixels.columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if pixels.derivation:
        ds.DerivationDescription = pixels.derivation[:1024]  # ST
    if pixels.lossy_method:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = pixels.lossy_method
    else:
        ds.LossyImageCompression = "00"
    if pixels.frames > 1:
        ds.NumberOfFrames = pixels.frames
        # Pages of a document: Page Number Vector (0018,2001) is the frame increment.
        ds.FrameIncrementPointer = 0x00182001
        ds.PageNumberVector = list(range(1, pixels.frames + 1))
        if not color:
            ds.PresentationLUTShape = "IDENTITY"
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.RescaleType = "US"
    ds.PixelData = pixels.pixel_file
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"
