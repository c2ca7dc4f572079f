"""Sample files the demo drops, made on the spot so nothing binary ships in the package."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw


def _picture(size: tuple[int, int], text: str, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, "black" if mode != "RGB" else (20, 30, 60))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 32):
        draw.line([(x, 0), (x, size[1])], fill="gray" if mode != "RGB" else (60, 90, 140))
    draw.ellipse([size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4], outline="white")
    draw.text((10, 10), text, fill="white")
    return image


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def write_samples(folder: Path, round_no: int = 1) -> list[Path]:
    """Write a JPEG, a PNG, a multi-page TIFF and a PDF for two demo patients."""
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def save(name: str, data: bytes) -> None:
        # Written under a hidden name and renamed, as a well-behaved device would do.
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        target = folder / name
        tmp.rename(target)
        made.append(target)

    jpeg = io.BytesIO()
    _picture((640, 480), f"DEMO US image {round_no}").save(jpeg, "JPEG", quality=90)
    save(f"DEMO001_DOE^JANE_{round_no:03d}_us.jpg", jpeg.getvalue())

    png = io.BytesIO()
    _picture((512, 512), f"DEMO screen {round_no}", mode="L").save(png, "PNG")
    save(f"DEMO001_DOE^JANE_{round_no:03d}_screen.png", png.getvalue())

    tiff = io.BytesIO()
    frames = [_picture((256, 256), f"frame {i}") for i in range(3)]
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
    save(f"DEMO002_MÜLLER^JÜRGEN_{round_no:03d}_loop.tif", tiff.getvalue())

    save(
        f"DEMO002_MÜLLER^JÜRGEN_{round_no:03d}_report.pdf", _minimal_pdf(f"Demo report {round_no}")
    )
    return made
