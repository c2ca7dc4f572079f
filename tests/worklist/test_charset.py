"""Strict decoding of received identifiers: declared sets, fallback, ISO 2022, refusals."""

from __future__ import annotations

from io import BytesIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from gateway.worklist.charset import UndecodableError, decode_identifier, decode_text


def over_the_wire(ds: Dataset) -> Dataset:
    """Encode as a peer would (implicit VR) and decode raw, as pynetdicom hands it over."""
    data = encode(ds, True, True)
    assert data is not None
    return decode(BytesIO(data), True, True)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Zoë"),
        ("ISO_IR 192", "Grüß^Ωmega^Ελένη"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ],
)
def test_declared_sets_decode_to_unicode(charset: object, name: str):
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.OtherPatientIDs = ["A", "B"]
    out = decode_identifier(over_the_wire(ds), "ISO_IR 6")
    assert str(out.PatientName) == name
    assert list(out.OtherPatientIDs) == ["A", "B"]
    assert "SpecificCharacterSet" not in out


def test_no_declared_set_uses_the_fallback():
    raw = Dataset()
    raw.PatientName = "Zoe"
    wire = over_the_wire(raw)
    assert str(decode_identifier(wire, "ISO_IR 100").PatientName) == "Zoe"


def test_bytes_that_do_not_decode_are_refused():
    with pytest.raises(UndecodableError):
        decode_text("Müller".encode("latin-1"), ["ISO_IR 192"])


def test_an_escape_to_an_undeclared_set_is_refused():
    with pytest.raises(UndecodableError):
        decode_text(b"Yamada=\x1b$B;3ED\x1b(B", ["ISO_IR 100"])


def test_an_unknown_character_set_term_is_refused():
    ds = Dataset()
    ds.PatientName = "X"
    wire = over_the_wire(ds)
    with pytest.raises(UndecodableError):
        decode_identifier(wire, "NOT A SET")


@given(
    st.text(
        alphabet=st.characters(
            codec="latin-1", blacklist_characters="\\^=", blacklist_categories=("Cc",)
        ),
        max_size=20,
    )
)
def test_latin1_round_trip(text: str):
    assert decode_text(text.encode("latin-1"), ["ISO_IR 100"]) == text


WORD = st.text(alphabet="山田太郎やまだたろうABC", min_size=1, max_size=4)
JAPANESE_PN = st.lists(st.lists(WORD, min_size=1, max_size=3), min_size=1, max_size=3).map(
    lambda groups: "=".join("^".join(parts) for parts in groups)
)


@given(JAPANESE_PN)
def test_iso2022_jp_round_trip_through_pydicom_encoding(text: str):
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = text
    out = decode_identifier(over_the_wire(ds), "ISO_IR 6")
    assert str(out.PatientName or "") == text.strip(" ")
