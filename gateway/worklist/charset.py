"""Strict decoding of received identifiers with their Specific Character Set; pure.

pydicom decodes text lazily and, when a value does not decode, only warns and substitutes
replacement characters (unless the process-wide ``reading_validation_mode`` is RAISE, which we
must not flip from one thread). A worklist with a mangled patient name must not reach the cache,
so text values are decoded here, strictly, before anything else touches them:

* the declared Specific Character Set is used; an identifier that declares none gets the
  configured fallback (``[worklist] character_set``);
* ISO 2022 code extensions (e.g. ``ISO 2022 IR 13\\ISO 2022 IR 87``, Japanese) are honoured:
  each escape sequence must name a set the identifier declared;
* the whole value is decoded before it is split at ``\\`` (values) and ``^``/``=`` (PN), so a
  multi-byte character that contains those byte values is never cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom.charset import (
    CODES_TO_ENCODINGS,
    ESC,
    default_encoding,
    handled_encodings,
    python_encoding,
)
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

SPECIFIC_CHARACTER_SET = 0x00080005
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
_MULTI_VALUED = frozenset({"SH", "LO", "PN", "UC"})
_DELIMS = frozenset({0x0D, 0x0A, 0x09, 0x0C, 0x5C})
_PN_DELIMS = _DELIMS | {0x5E, 0x3D}
_FRAGMENTS = re.compile(rb"(^[^\x1b]+|\x1b[^\x1b]*)")


class UndecodableError(ValueError):
    """A received identifier cannot be decoded faithfully; do not use it."""


def parse_character_set(value: str | Sequence[str] | None, fallback: str) -> list[str]:
    """Defined terms of a Specific Character Set value (fallback when absent or empty)."""
    terms = [] if value is None else [value] if isinstance(value, str) else list(value)
    terms = [t.strip() for t in terms]
    if not any(terms):
        terms = [fallback]
    elif not terms[0]:
        # An empty first value means the default repertoire, with code extensions after it.
        terms[0] = "ISO 2022 IR 6"
    for term in terms:
        if term not in python_encoding:
            raise UndecodableError(f"unknown Specific Character Set term {term!r}")
    return terms


def decode_text(value: bytes, terms: Sequence[str], delimiters: frozenset[int] = _DELIMS) -> str:
    """Decode one text value strictly; raises UndecodableError."""
    encodings = [python_encoding[t] for t in terms]
    try:
        if ESC not in value:
            return value.decode(encodings[0])
        return "".join(_fragment(f, encodings, delimiters) for f in _FRAGMENTS.findall(value))
    except (UnicodeError, LookupError) as exc:
        raise UndecodableError(f"text does not decode with {'/'.join(terms)}: {exc}") from None


def _fragment(fragment: bytes, encodings: list[str], delimiters: frozenset[int]) -> str:
    if not fragment.startswith(ESC):
        return fragment.decode(encodings[0])
    length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
    encoding = CODES_TO_ENCODINGS.get(fragment[:length])
    if encoding is None or (encoding not in encodings and encoding != default_encoding):
        raise UnicodeError(f"escape sequence {fragment[:length]!r} names an undeclared set")
    if encoding in handled_encodings:
        return fragment.decode(encoding)  # Python's ISO 2022 codecs consume the escapes
    body = fragment[length:]
    cut = next((i for i, byte in enumerate(body) if byte in delimiters), None)
    if cut is None:
        return body.decode(encoding)
    # A delimiter returns single-byte code extensions to the initial set (PS3.5 6.1.2.5.3).
    return body[:cut].decode(encoding) + body[cut:].decode(encodings[0])


def decode_identifier(ds: Dataset, fallback: str) -> Dataset:
    """A copy of ``ds`` with every text value decoded to Unicode and no Specific Character Set.

    Private and unknown attributes are dropped (their VR and character set are unknowable).
    """
    return _decode(ds, parse_character_set(_charset_value(ds), fallback))


def _charset_value(ds: Dataset) -> list[str] | None:
    if SPECIFIC_CHARACTER_SET not in ds:
        return None
    element = ds.get_item(SPECIFIC_CHARACTER_SET)
    raw = element.value
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode("ascii", errors="strict").split("\\")
    if isinstance(raw, str):
        return raw.split("\\")
    return [str(v) for v in raw]


def _decode(ds: Dataset, terms: list[str]) -> Dataset:
    out = Dataset()
    for tag in list(ds.keys()):
        if tag == SPECIFIC_CHARACTER_SET or tag.is_private or tag.element == 0:
            continue
        element = ds.get_item(tag)
        vr = _vr(element)
        if vr is None:
            continue
        if vr == "SQ":
            items = ds[tag].value or []
            out.add(DataElement(tag, "SQ", DicomSequence([_decode_item(i, terms) for i in items])))
        elif vr in TEXT_VRS and isinstance(element, RawDataElement):
            out.add(DataElement(tag, vr, _text_value(element.value, vr, terms)))
        else:
            out.add(ds[tag])
    return out


def _decode_item(item: Dataset, terms: list[str]) -> Dataset:
    own = _charset_value(item)
    return _decode(item, terms if own is None else parse_character_set(own, terms[0]))


def _vr(element: DataElement | RawDataElement) -> str | None:
    if element.VR:
        return str(element.VR)
    try:
        return str(dictionary_VR(Tag(element.tag)))
    except KeyError:
        return None


def _text_value(raw: bytes | None, vr: str, terms: list[str]) -> str | list[str] | None:
    if raw is None or raw == b"":
        return None
    text = decode_text(raw, terms, _PN_DELIMS if vr == "PN" else _DELIMS)
    if vr not in _MULTI_VALUED:
        return text.rstrip(" \x00")
    values = [v.strip(" \x00") for v in text.split("\\")]
    return values if len(values) > 1 else values[0]
