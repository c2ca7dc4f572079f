"""PDF files as Encapsulated PDF objects (PS3.3 A.45.1), the document byte-identical."""

from __future__ import annotations

import io
import warnings

from pydicom.dataset import Dataset
from pypdf import PdfReader

from gateway.convert.result import ConversionError

# How far from the end the %%EOF marker may sit: writers append newlines or a few junk bytes.
_EOF_WINDOW = 1024


def check_pdf(data: bytes) -> int:
    """Number of pages of a PDF that parses; ConversionError when it does not."""
    if not data.startswith(b"%PDF-"):
        raise ConversionError("not a PDF (no %PDF- header)")
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        raise ConversionError("truncated PDF (no %%EOF trailer)")
    if b"startxref" not in data[-_EOF_WINDOW:]:
        raise ConversionError("truncated PDF (no startxref before the trailer)")
    try:
        # Not strict: devices often write slightly wrong xref offsets that every reader
        # repairs; the header, trailer and a resolvable page tree are what is demanded.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data), strict=False)
            pages = len(reader.pages)
    # pypdf raises many kinds of errors on hostile input; any of them means "does not parse".
    except Exception as exc:
        raise ConversionError(f"PDF does not parse: {exc}") from exc
    if pages < 1:
        raise ConversionError("PDF has no pages")
    return pages


def add_pdf_document(ds: Dataset, data: bytes) -> None:
    """Encapsulated Document module attributes with the PDF as (0042,0011)."""
    ds.DocumentTitle = ""
    ds.ConceptNameCodeSequence = []
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # PS3.5 7.1: values have even length. An odd PDF gets one trailing 0x00 here; PDF readers
    # ignore bytes after %%EOF, and Encapsulated Document Length records the true length.
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + b"\x00" if len(data) % 2 else data
