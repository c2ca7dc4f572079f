"""Print jobs rendered as PDF like the printout (gateway.convert.textpdf)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from gateway.convert import textpdf
from gateway.convert.pdf import check_pdf

WHEN = 1_767_000_000.0


def _reader(data: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(data))


def test_form_feed_starts_a_new_page() -> None:
    assert textpdf.paginate("one\ntwo\fthree", 80, 66) == [["one", "two"], ["three"]]


def test_form_feed_ending_the_job_adds_no_blank_page() -> None:
    assert textpdf.paginate("one\n\f", 80, 66) == [["one"]]


def test_form_feed_on_an_empty_form_ejects_a_blank_page() -> None:
    assert textpdf.paginate("one\f\ftwo", 80, 66) == [["one"], [], ["two"]]


def test_a_full_form_continues_on_the_next_page() -> None:
    text = "\n".join(f"l{i}" for i in range(25))
    pages = textpdf.paginate(text, 80, 10)

    assert [len(p) for p in pages] == [10, 10, 5]
    assert pages[2][-1] == "l24"


def test_a_line_wider_than_the_form_wraps_and_loses_nothing() -> None:
    pages = textpdf.paginate("A" * 50 + "B" * 10, 25, 66)

    assert pages == [["A" * 25, "A" * 25, "B" * 10]]


def test_tabs_expand_to_eight_columns_and_line_ends_are_normalised() -> None:
    pages = textpdf.paginate("a\tb\r\nc\rd", 80, 66)

    assert pages == [["a       b", "c", "d"]]


def test_an_empty_job_is_one_blank_page() -> None:
    assert textpdf.paginate("", 80, 66) == [[]]


def test_printable_maps_box_drawing_to_ascii_and_keeps_latin1() -> None:
    assert textpdf.printable("┌─┐│└┘█") == "+-+|++#"
    assert textpdf.printable("Müller") == "Müller"
    # ó is Latin-1, ź decomposes to z, Ł has no decomposition, 患 is no Latin letter.
    assert textpdf.printable("Łódź 患") == "?ódz ?"


def test_same_job_same_bytes() -> None:
    text = "ECG REPORT\nHR 72 /min\fPage 2\n"
    first = textpdf.render_print_job(text, 80, 66, WHEN, "ECG report")
    second = textpdf.render_print_job(text, 80, 66, WHEN, "ECG report")

    assert first == second


def test_creation_date_comes_from_the_message_time() -> None:
    data = textpdf.render_print_job("x", 80, 66, WHEN)

    metadata = _reader(data).metadata
    assert metadata is not None
    assert str(metadata["/CreationDate"]) == "D:20251229092000Z"
    assert data != textpdf.render_print_job("x", 80, 66, WHEN + 1)


@pytest.mark.parametrize(("columns", "lines"), [(80, 66), (132, 66), (40, 20)])
def test_page_is_the_form_at_ten_cpi_and_six_lpi(columns: int, lines: int) -> None:
    data = textpdf.render_print_job("x", columns, lines, WHEN)

    box = _reader(data).pages[0].mediabox
    margins = 2 * textpdf.MARGIN
    assert float(box.width) == pytest.approx(columns * 7.2 + margins)
    assert float(box.height) == pytest.approx(lines * 12 + margins)


def test_pdf_has_the_printed_text_in_courier_and_one_page_per_form() -> None:
    text = "PATIENT REPORT\n Name: Müller^Jörg\n┌──┐\fPAGE TWO\n"
    data = textpdf.render_print_job(text, 80, 66, WHEN, "Report")

    assert check_pdf(data) == 2
    reader = _reader(data)
    first = reader.pages[0].extract_text()
    assert "PATIENT REPORT" in first
    assert "Name: Müller^Jörg" in first
    assert "+--+" in first
    assert "PAGE TWO" in reader.pages[1].extract_text()
    fonts = reader.pages[0]["/Resources"].get_object()["/Font"].get_object()  # type: ignore[index]
    assert any("Courier" in str(font.get_object()["/BaseFont"]) for font in fonts.values())


def test_pdf_metadata_carries_no_text_of_the_job() -> None:
    data = textpdf.render_print_job("Name: Secret^Patient", 80, 66, WHEN, "Report")

    metadata = _reader(data).metadata
    assert metadata is not None
    assert "Secret" not in " ".join(str(v) for v in metadata.values())
    assert str(metadata["/Title"]) == "Report"


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(
        alphabet=st.characters(codec="utf-8") | st.sampled_from("\f\n\r\t ─│┌"), max_size=400
    ),
    columns=st.integers(20, 132),
    lines=st.integers(10, 80),
)
def test_any_text_paginates_without_losing_a_printed_character(
    text: str, columns: int, lines: int
) -> None:
    pages = textpdf.paginate(text, columns, lines)

    assert all(len(page) <= lines and all(len(line) <= columns for line in page) for page in pages)
    printed = "".join("".join(page) for page in pages)
    expected = "".join(
        line.expandtabs(textpdf.TAB_SIZE).rstrip()
        for line in text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").split("\n")
    )
    assert printed == expected
    assert check_pdf(textpdf.render_print_job(text, columns, lines, WHEN)) == len(pages)
