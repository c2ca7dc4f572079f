"""C-FIND matching (PS3.4 C.2.2.2) of a query identifier against worklist datasets; pure.

Rules implemented (also in docs/worklist.md):

* **Universal**: an empty value matches everything, including a missing attribute.
* **Single value**: equal after removing padding spaces. Case-sensitive, except PN, which
  PS3.4 lets an SCP match case-insensitively: we do (``casefold``), since modality keyboards
  and RIS spelling of names rarely agree on case.
* **Wildcard** ``*`` (any run, also empty) and ``?`` (one character) in string VRs other than
  DA, TM, DT and UI; same case rule as single values.
* **List of UIDs** (UI values separated by ``\\``): any of them.
* **Ranges** for DA, TM and DT: ``A-B`` inclusive, ``-B``, ``A-``. A partial upper bound
  covers what it names (``-12`` in TM includes 12:59:59). Date and time keys are matched
  independently (no combined date-time matching).
* **Sequence matching**: a sequence key with one item matches when any item of the dataset's
  sequence matches all the item's keys; an empty sequence (or an item with only universal keys)
  is universal. Matching items only are returned for a non-universal sequence key.
* A multi-valued attribute in the dataset matches when any of its values does. A non-UI query
  value with ``\\`` is treated as a list: any of its values.
* A non-universal key the dataset lacks does not match.

Datasets are first turned into :data:`Record` (tag -> text or list of Records) once, so matching
thousands of cached items costs dictionary lookups, not pydicom attribute access.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

Record: TypeAlias = dict[int, str | list["Record"]]
Predicate = Callable[[str], bool]

SPECIFIC_CHARACTER_SET = 0x00080005
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_NO_WILDCARD_VRS = frozenset({"DA", "TM", "DT", "UI"})
_DT_WITH_OFFSET = re.compile(r"^\d{4,14}(\.\d{1,6})?[+-]\d{4}$")
_RANGE_VALUE = re.compile(r"^[0-9.:+]*$")  # what a DA/TM/DT bound may contain (after the split)


class QueryError(ValueError):
    """The identifier is not a query we can match (answer it with a failure status)."""


@dataclass(frozen=True)
class _Key:
    tag: int
    universal: bool
    on_text: Predicate | None = None  # non-sequence keys
    on_items: Query | None = None  # sequence keys


@dataclass(frozen=True)
class Query:
    """A compiled query identifier."""

    keys: tuple[_Key, ...]

    def matches(self, record: Record) -> bool:
        """True when every key of the query matches ``record``."""
        for key in self.keys:
            if key.universal:
                continue
            value = record.get(key.tag)
            if value is None:
                return False
            if key.on_items is not None:
                if not isinstance(value, list):
                    return False
                if not any(key.on_items.matches(item) for item in value):
                    return False
            elif isinstance(value, list) or key.on_text is None or not key.on_text(value):
                return False
        return True


def to_record(ds: Dataset) -> Record:
    """The dataset's values as text (multi-values joined with ``\\``), sequences as lists."""
    record: Record = {}
    for element in ds:
        if element.VR == "SQ":
            record[int(element.tag)] = [to_record(item) for item in element.value or ()]
        else:
            record[int(element.tag)] = _text(element)
    return record


def _text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join("" if v is None else str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def compile_query(identifier: Dataset) -> Query:
    """Compile an identifier; raises QueryError for malformed ranges or sequence keys."""
    return Query(tuple(_compile_element(e) for e in identifier if _is_key(int(e.tag))))


def _is_key(tag: int) -> bool:
    # Group lengths and Specific Character Set describe the message, they are not keys.
    return tag & 0xFFFF != 0 and tag != SPECIFIC_CHARACTER_SET


def _compile_element(element: DataElement) -> _Key:
    tag = int(element.tag)
    if element.VR == "SQ":
        items = list(element.value or ())
        if len(items) > 1:
            raise QueryError(f"sequence key {element.tag} has {len(items)} items; at most 1")
        if not items:
            return _Key(tag, universal=True)
        sub = compile_query(items[0])
        if all(k.universal for k in sub.keys):
            return _Key(tag, universal=True)
        return _Key(tag, universal=False, on_items=sub)
    text = _text(element).strip(" ")
    if not text.strip("\\ "):
        return _Key(tag, universal=True)
    return _Key(tag, universal=False, on_text=_predicate(str(element.VR), text))


def _predicate(vr: str, text: str) -> Predicate:
    if vr == "UI":
        uids = frozenset(part.strip(" \x00") for part in text.split("\\"))
        return lambda value: any(v.strip(" \x00") in uids for v in value.split("\\"))
    parts = [p.strip(" ") for p in text.split("\\")] if "\\" in text else [text]
    if vr in _RANGE_VRS:
        tests = [_range_or_single(vr, part) for part in parts]
    else:
        fold = vr == "PN"
        tests = [_string_test(part, fold, vr not in _NO_WILDCARD_VRS) for part in parts]
    if len(tests) == 1:
        only = tests[0]
        return lambda value: any(only(v.strip(" ")) for v in value.split("\\"))
    return lambda value: any(t(v.strip(" ")) for v in value.split("\\") for t in tests)


def _string_test(pattern: str, fold: bool, wildcards: bool) -> Predicate:
    wanted = pattern.casefold() if fold else pattern
    if wildcards and ("*" in pattern or "?" in pattern):
        regex = re.compile(
            "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in wanted),
            re.DOTALL,
        )
        if fold:
            return lambda value: regex.fullmatch(value.casefold()) is not None
        return lambda value: regex.fullmatch(value) is not None
    if fold:
        return lambda value: value.casefold() == wanted
    return lambda value: value == wanted


def _range_or_single(vr: str, text: str) -> Predicate:
    if "-" not in text or (vr == "DT" and _DT_WITH_OFFSET.match(text)):
        single = _normalise(vr, text)
        return lambda value: _normalise(vr, value) == single
    pieces = text.split("-")
    if vr == "DT" and len(pieces) > 2:
        # DT bounds may carry a UTC offset: split at the '-' that has digits of a datetime
        # on both sides and leaves two well-formed bounds.
        pieces = _split_dt_range(text)
    if len(pieces) != 2:
        raise QueryError(f"malformed {vr} range {text!r}")
    low, high = (p.strip(" ") for p in pieces)
    if not low and not high:
        raise QueryError(f"empty {vr} range {text!r}")
    for bound in (low, high):
        if not _RANGE_VALUE.match(bound):
            raise QueryError(f"malformed {vr} range {text!r}")
    lo = _normalise(vr, low) if low else None
    hi = _upper(vr, high) if high else None

    def within(value: str) -> bool:
        if not value:
            return False
        v = _normalise(vr, value)
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    return within


def _split_dt_range(text: str) -> list[str]:
    for i, ch in enumerate(text):
        if ch != "-":
            continue
        low, high = text[:i], text[i + 1 :]
        if _dt_bound(low) and _dt_bound(high):
            return [low, high]
    return [text]


def _dt_bound(text: str) -> bool:
    return not text or bool(re.match(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$", text))


def _normalise(vr: str, value: str) -> str:
    text = value.strip(" ")
    if vr == "TM":
        text = text.replace(":", "")
    elif vr == "DA":
        text = text.replace(".", "")  # ACR-NEMA style 2024.01.05
    elif vr == "DT":
        text = re.sub(r"[+-]\d{4}$", "", text)  # offsets are not compared
    return text


def _upper(vr: str, value: str) -> str:
    # A partial upper bound includes everything it names: pad with the highest digit.
    text = _normalise(vr, value)
    width = {"DA": 8, "TM": 13, "DT": 21}[vr]
    if vr in ("TM", "DT") and "." not in text:
        whole = 6 if vr == "TM" else 14
        text = text.ljust(whole, "9") + ".999999"
    return text.ljust(width, "9")


def matches(identifier: Dataset, ds: Dataset) -> bool:
    """One-shot: does ``ds`` match the query ``identifier``."""
    return compile_query(identifier).matches(to_record(ds))


def build_response(identifier: Dataset, ds: Dataset, query: Query | None = None) -> Dataset:
    """The response identifier: exactly the requested keys, valued from ``ds`` (else empty)."""
    compiled = query if query is not None else compile_query(identifier)
    subqueries = {k.tag: k.on_items for k in compiled.keys if k.on_items is not None}
    out = Dataset()
    for element in identifier:
        tag = int(element.tag)
        if not _is_key(tag):
            continue
        have = ds.get(element.tag)
        if element.VR == "SQ":
            out.add(DataElement(element.tag, "SQ", _response_items(element, have, subqueries)))
        elif have is None or have.VR == "SQ":
            out.add(DataElement(element.tag, element.VR, None))
        else:
            out.add(DataElement(element.tag, have.VR, have.value))
    return out


def _response_items(
    requested: DataElement, have: DataElement | None, subqueries: dict[int, Query]
) -> Sequence:
    if have is None or have.VR != "SQ" or not have.value:
        return Sequence([])
    items: Iterable[Dataset] = have.value
    wanted = list(requested.value or ())
    if not wanted:
        return Sequence([_copy(item) for item in items])
    sub = subqueries.get(int(requested.tag))
    if sub is not None:
        items = [item for item in items if sub.matches(to_record(item))]
    return Sequence([build_response(wanted[0], item) for item in items])


def _copy(item: Dataset) -> Dataset:
    out = Dataset()
    for element in item:
        out.add(DataElement(element.tag, element.VR, element.value))
    return out
