"""A print job's text as a PDF that looks like the printout: Courier at 10 cpi and 6 lpi.

The page is the device's form: ``columns`` characters of 1/10 inch by ``lines_per_page`` lines
of 1/6 inch, plus a quarter-inch margin (80 x 66 gives a US Letter sheet, 132 columns the wide
fanfold). A form feed starts a new page, as does a full page; a line longer than the form wraps
onto the next line, as a line printer with automatic wrap does, so no character is lost.

Deterministic: the creation date is the message's time (UTC), the producer is the gateway, and
fpdf2's file ID is a hash of the content, so the same job always gives the same bytes.

Courier is one of the PDF core fonts (no font file to ship); it covers Latin-1. Box-drawing
characters of code page 437 become their ASCII look-alikes, and anything else outside Latin-1
becomes "?" in the PDF only (a Basic Text SR, when the profile asks for one, keeps the text).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

from fpdf import FPDF

import gateway

POINTS_PER_INCH = 72.0
CHAR_WIDTH = POINTS_PER_INCH / 10  # 10 characters per inch (pica)
LINE_HEIGHT = POINTS_PER_INCH / 6  # 6 lines per inch
FONT_SIZE = CHAR_WIDTH / 0.6  # Courier's advance is 0.6 em: 12 pt at 10 cpi
MARGIN = POINTS_PER_INCH / 4
_BASELINE = LINE_HEIGHT * 0.78  # from the top of a line to its baseline
TAB_SIZE = 8

# Code page 437 box drawing and shading as a printer without those glyphs would show them.
_BOX_HORIZONTAL = set("─━═╌╍┄┅┈┉")
_BOX_VERTICAL = set("│┃║╎╏┆┇┊┋")


def paginate(text: str, columns: int, lines_per_page: int) -> list[list[str]]:
    """The printed pages of ``text``: lists of at most ``lines_per_page`` lines of ``columns``."""
    if columns < 1 or lines_per_page < 1:
        raise ValueError("columns and lines_per_page must be positive")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    forms = text.split("\f")
    if len(forms) > 1 and not forms[-1].strip():
        forms.pop()  # a job ends with a form feed to eject its last page, not to add one
    pages: list[list[str]] = []
    for form in forms:
        lines = [
            chunk
            for raw in form.split("\n")
            for chunk in _wrap(raw.expandtabs(TAB_SIZE).rstrip(), columns)
        ]
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            pages.append([])  # a form feed on an empty form ejects a blank sheet
            continue
        pages.extend(
            lines[start : start + lines_per_page] for start in range(0, len(lines), lines_per_page)
        )
    return pages or [[]]


def _wrap(line: str, columns: int) -> list[str]:
    if not line:
        return [""]
    return [line[start : start + columns] for start in range(0, len(line), columns)]


def printable(line: str) -> str:
    """``line`` in Latin-1 for the Courier core font: box drawing as ASCII, the rest as '?'."""
    return "".join(_printable_char(c) for c in line)


def _printable_char(char: str) -> str:
    if char in _BOX_HORIZONTAL:
        return "-"
    if char in _BOX_VERTICAL:
        return "|"
    if "\u2500" <= char <= "\u257f":
        return "+"  # corners, tees and crossings
    if "\u2580" <= char <= "\u259f":
        return "#"  # blocks and shades
    if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
        return " "
    if ord(char) <= 0xFF:
        return char
    # Composed letters outside Latin-1 (e.g. "ő") print as their base letter.
    base = unicodedata.normalize("NFKD", char)[:1]
    return base if base and ord(base) < 0x7F and base.isprintable() else "?"


def render_print_job(
    text: str,
    columns: int,
    lines_per_page: int,
    created_at: float,
    title: str = "",
) -> bytes:
    """The PDF for a print job; same arguments, same bytes."""
    width = columns * CHAR_WIDTH + 2 * MARGIN
    height = lines_per_page * LINE_HEIGHT + 2 * MARGIN
    pdf = FPDF(unit="pt", format=(width, height))
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_creation_date(datetime.fromtimestamp(created_at, UTC))
    pdf.set_producer(f"dicom-edge-gateway {gateway.__version__}")
    pdf.set_creator("dicom-edge-gateway print capture")
    if title:
        pdf.set_title(printable(title))
    pdf.set_font("Courier", size=FONT_SIZE)
    for page in paginate(text, columns, lines_per_page):
        pdf.add_page()
        for number, line in enumerate(page):
            if line:
                pdf.text(MARGIN, MARGIN + number * LINE_HEIGHT + _BASELINE, printable(line))
    return bytes(pdf.output())
