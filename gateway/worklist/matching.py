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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

Record: TypeAlias = dict[int, str | list["Record"]]
Predicate = Callable[[str], bool]

SPECIFIC_CHARACTER_SET = 0x00080005
SCHEDULED_PROCEDURE_STEP_SEQUENCE = 0x00400100
SCHEDULED_PROCEDURE_STEP_START_DATE = 0x00400002
PATIENT_ID = 0x00100020
_PLAIN_DATE = re.compile(r"^\d{8}$")
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
    # The non-universal keys split by kind, so matching thousands of records stays a tight loop.
    text_tests: tuple[tuple[int, Predicate], ...] = ()
    item_tests: tuple[tuple[int, Query], ...] = ()

    @classmethod
    def of(cls, keys: tuple[_Key, ...]) -> Query:
        """Build from compiled keys."""
        text = tuple((k.tag, k.on_text) for k in keys if not k.universal and k.on_text)
        items = tuple((k.tag, k.on_items) for k in keys if not k.universal and k.on_items)
        return cls(keys, text, items)

    def matches(self, record: Record) -> bool:
        """True when every key of the query matches ``record``."""
        get = record.get
        for tag, test in self.text_tests:
            value = get(tag)
            if value is None or isinstance(value, list) or not test(value):
                return False
        for tag, sub in self.item_tests:
            items = get(tag)
            if not isinstance(items, list):
                return False
            for item in items:
                if sub.matches(item):
                    break
            else:
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
    return Query.of(tuple(_compile_element(e) for e in identifier if _is_key(int(e.tag))))


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

        def single(value: str) -> bool:
            if "\\" not in value:
                return only(value.strip(" "))
            return any(only(v.strip(" ")) for v in value.split("\\"))

        return single
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


def exact_step_date(identifier: Dataset) -> str | None:
    """The query's Scheduled Procedure Step Start Date if it is one plain date, else None.

    With such a key a record can only match if one of its step dates is exactly that date
    (see :func:`step_dates`), so a caller may look at those records alone.
    """
    steps = identifier.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if steps is None or steps.VR != "SQ" or len(steps.value or ()) != 1:
        return None
    element = steps.value[0].get(SCHEDULED_PROCEDURE_STEP_START_DATE)
    if element is None or element.VR != "DA":
        return None
    text = _text(element).strip(" ")
    return text if _PLAIN_DATE.match(text) else None


def step_dates(record: Record) -> frozenset[str]:
    """Every value a DA key compares for the record's step start dates (index keys)."""
    steps = record.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if not isinstance(steps, list):
        return frozenset()
    dates: set[str] = set()
    for step in steps:
        value = step.get(SCHEDULED_PROCEDURE_STEP_START_DATE)
        if isinstance(value, str):
            dates.update(_normalise("DA", part) for part in value.split("\\"))
    return frozenset(dates)


def exact_patient_id(identifier: Dataset) -> str | None:
    """The query's Patient ID if it is one value without wildcards, else None.

    With such a key a record can only match if one of its Patient ID values is exactly that
    (see :func:`patient_ids`): a scanned wristband reads that patient's records alone.
    """
    element = identifier.get(PATIENT_ID)
    if element is None or element.VR != "LO":
        return None
    text = _text(element).strip(" ")
    if not text or "\\" in text or "*" in text or "?" in text:
        return None
    return text


def patient_ids(record: Record) -> frozenset[str]:
    """Every value the Patient ID key compares for the record (index keys)."""
    value = record.get(PATIENT_ID)
    if not isinstance(value, str):
        return frozenset()
    return frozenset(part.strip(" ") for part in value.split("\\"))


def matches(identifier: Dataset, ds: Dataset) -> bool:
    """One-shot: does ``ds`` match the query ``identifier``."""
    return compile_query(identifier).matches(to_record(ds))


def build_response(identifier: Dataset, ds: Dataset, query: Query | None = None) -> Dataset:
    """The response identifier: exactly the requested keys, valued from ``ds`` (else empty)."""
    return response_from_record(identifier, to_record(ds), query)


def response_from_record(
    identifier: Dataset, record: Record, query: Query | None = None
) -> Dataset:
    """As :func:`build_response`, from a Record (values take the VR the query gave each key)."""
    compiled = query if query is not None else compile_query(identifier)
    subqueries = {k.tag: k.on_items for k in compiled.keys if k.on_items is not None}
    out = Dataset()
    for element in identifier:
        tag = int(element.tag)
        if not _is_key(tag):
            continue
        have = record.get(tag)
        if element.VR == "SQ":
            items = have if isinstance(have, list) else []
            out.add(DataElement(tag, "SQ", _response_items(element, items, subqueries.get(tag))))
        elif have is None or isinstance(have, list) or have == "":
            out.add(DataElement(tag, element.VR, None))
        else:
            out.add(DataElement(tag, element.VR, _typed(str(element.VR), have)))
    return out


def response_shape(identifier: Dataset) -> tuple[Any, ...]:
    """What :func:`response_from_record` takes from ``identifier``: equal shapes, equal answers.

    Top-level keys give a response their tag and VR only; a sequence key also filters the
    items returned by its values, so inside sequences the values count too.
    """
    return tuple(
        (int(e.tag), str(e.VR), _items_shape(e) if e.VR == "SQ" else None) for e in identifier
    )


def _items_shape(element: DataElement) -> tuple[Any, ...]:
    return tuple(
        tuple((int(e.tag), str(e.VR), _items_shape(e) if e.VR == "SQ" else _text(e)) for e in item)
        for item in element.value or ()
    )


def _response_items(requested: DataElement, items: list[Record], sub: Query | None) -> Sequence:
    wanted = list(requested.value or ())
    if sub is not None:
        items = [item for item in items if sub.matches(item)]
    if not wanted or not len(wanted[0]):
        # A universal sequence key: the whole items (VRs from the data dictionary).
        return Sequence([_whole(item) for item in items])
    sub_query = sub if sub is not None else compile_query(wanted[0])
    return Sequence([response_from_record(wanted[0], item, sub_query) for item in items])


def _whole(record: Record) -> Dataset:
    out = Dataset()
    for tag, value in record.items():
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            continue
        if isinstance(value, list):
            out.add(DataElement(tag, "SQ", Sequence([_whole(item) for item in value])))
        elif vr != "SQ" and " or " not in vr:
            out.add(DataElement(tag, vr, _typed(vr, value) if value else None))
    return out


_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "IS"})
_FLOAT_VRS = frozenset({"FL", "FD"})


def _typed(vr: str, text: str) -> Any:
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        convert = int if vr in _INT_VRS else float
        try:
            values = [convert(v) for v in text.split("\\") if v.strip()]
        except ValueError:
            return None
        return values[0] if len(values) == 1 else values or None
    return text


def record_from_json(model: dict[str, Any]) -> Record:
    """A Record from pydicom's JSON model (``Dataset.to_json_dict``), without building a Dataset.

    Gives the same text as :func:`to_record` of the same dataset, at a fraction of the cost.
    """
    record: Record = {}
    for key, element in model.items():
        tag = int(key, 16)
        values = element.get("Value")
        if element.get("vr") == "SQ":
            record[tag] = [record_from_json(item) for item in values or ()]
        elif values is None:
            record[tag] = ""
        elif element.get("vr") == "PN":
            record[tag] = "\\".join(_pn_text(v) for v in values)
        else:
            record[tag] = "\\".join("" if v is None else _json_text(v) for v in values)
    return record


def _json_text(value: Any) -> str:
    return str(value)


def _pn_text(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)
