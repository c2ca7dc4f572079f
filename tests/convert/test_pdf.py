from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pypdf import PdfWriter

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.result import ConversionError
from gateway.convert.uids import UidFactory
from tests.convert.builders import assert_valid_dicom, minimal_pdf
from tests.convert.conftest import ItemFactory, make_settings

PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def pypdf_document() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=300, height=400)
    writer.add_blank_page(width=300, height=400)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("extra", [b"", b"\n"], ids=["as-made", "other-parity"])
@pytest.mark.parametrize("make", [minimal_pdf, pypdf_document], ids=["by-hand", "pypdf"])
def test_pdf_is_encapsulated_byte_identical(
    make: Callable[[], bytes],
    extra: bytes,
    tmp_path: Path,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    data = make() + extra  # a newline after %%EOF is harmless and flips the length parity
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    out = out_dir / "out.dcm"

    result = converter.convert(make_item(source), out)

    assert_valid_dicom(out)
    ds = pydicom.dcmread(out)
    assert result.sop_class_uid == ds.SOPClassUID == PDF_STORAGE
    assert result.kind == "pdf"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocumentLength == len(data)
    stored = ds.EncapsulatedDocument
    assert stored[: len(data)] == data
    assert stored[len(data) :] == (b"\x00" if len(data) % 2 else b"")
    assert ds.Modality == "DOC"
    assert ds.BurnedInAnnotation == "YES"


def test_truncated_pdf_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "cut.pdf"
    source.write_bytes(minimal_pdf(3)[:200])
    out = out_dir / "out.dcm"
    with pytest.raises(ConversionError, match="truncated PDF"):
        converter.convert(make_item(source), out)
    assert not out.exists()


def test_pdf_header_and_trailer_around_garbage_is_refused(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    source = tmp_path / "fake.pdf"
    source.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20 + b"\nstartxref\n9\n%%EOF\n")
    with pytest.raises(ConversionError, match="PDF"):
        converter.convert(make_item(source), out_dir / "out.dcm")


def test_pdf_over_the_size_limit_is_refused(
    tmp_path: Path,
    out_dir: Path,
    grouper: StudyGrouper,
    uids: UidFactory,
    make_item: ItemFactory,
) -> None:
    small = Converter(make_settings(max_encapsulated_bytes=100), grouper, uids)
    source = tmp_path / "big.pdf"
    source.write_bytes(minimal_pdf())
    with pytest.raises(ConversionError, match="limit"):
        small.convert(make_item(source), out_dir / "out.dcm")
