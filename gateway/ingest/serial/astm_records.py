"""ASTM E1394 records: split a message into H, P, O, R, C, L records and map them, I/O-free.

Delimiters come from the H record (``H|\\^&``: field, repeat, component, escape); escape
sequences ``&F& &S& &R& &E&`` stand for the delimiters inside a value. A P record gives the
patient identity, an R record a measurement through the profile's mapping, a C record a comment.
A result the profile does not map (or whose unit or value it cannot vouch for) is kept as a text
line, never dropped and never given a guessed code or unit. A message naming several patients
becomes one DeviceMessage per P record, so no result is filed under the wrong patient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.identity import PatientIdentity
from gateway.ingest.serial.astm_frames import RESTRICTED
from gateway.ingest.serial.message import Concept, DeviceMessage, Measurement
from gateway.ingest.serial.profile import DeviceProfile, MeasurementMap

_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_DS_MAX = 16  # a DICOM DS value is at most 16 characters
_PN_MAX = 64


@dataclass(frozen=True)
class Delimiters:
    """The four E1394 delimiters, as the H record declares them."""

    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"

    @classmethod
    def from_header(cls, header: str) -> Delimiters:
        """Delimiters from an H record's first five characters; defaults when it is short."""
        chars = header[1:5]
        if len(chars) < 4 or len(set(chars)) < 4:
            return cls()
        return cls(chars[0], chars[1], chars[2], chars[3])

    def unescape(self, text: str) -> str:
        """Replace ``&F& &S& &R& &E&`` by the delimiters; other escapes are kept as sent."""
        e = self.escape
        if e not in text:
            return text
        table = {"F": self.field, "S": self.component, "R": self.repeat, "E": self.escape}
        out: list[str] = []
        i = 0
        while i < len(text):
            if text[i] == e and i + 2 < len(text) and text[i + 2] == e and text[i + 1] in table:
                out.append(table[text[i + 1]])
                i += 3
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


@dataclass(frozen=True)
class Record:
    """One record: its type letter, its fields (escaped, as sent) and its bytes."""

    kind: str
    fields: tuple[str, ...]  # fields[0] is the record type field (ASTM field 1)
    raw: bytes
    delimiters: Delimiters

    def field(self, number: int) -> str:
        """ASTM field ``number`` (1-based) as sent, first repeat only; "" when absent."""
        if number < 1 or number > len(self.fields):
            return ""
        return self.fields[number - 1].split(self.delimiters.repeat)[0]

    def components(self, number: int) -> list[str]:
        """Field ``number``'s components, unescaped and stripped."""
        d = self.delimiters
        return [d.unescape(c).strip() for c in self.field(number).split(d.component)]

    def text(self, number: int, joiner: str = " ") -> str:
        """Field ``number`` as readable text: non-empty components joined."""
        return joiner.join(c for c in self.components(number) if c)


def encode_records(text_lines: Sequence[str]) -> bytes:
    """A profile's simulator message (one record per line) as the record stream to frame."""
    out = bytearray()
    for line in text_lines:
        record = line.strip("\r\n")
        if not record.strip():
            continue
        data = record.encode("utf-8")
        if any(b in RESTRICTED or b == 0x0D for b in data):
            raise ValueError("a record contains a control character E1381 reserves")
        out += data + b"\r"
    return bytes(out)


def split_records(stream: bytes) -> list[Record]:
    """The records of a message stream (records end with CR); never raises."""
    encoding = _encoding(stream)
    delimiters = Delimiters()
    records: list[Record] = []
    for part in stream.split(b"\r"):
        raw = part.strip(b"\n")
        if not raw.strip():
            continue
        text = raw.decode(encoding, errors="replace")
        if text[0] == "H":
            delimiters = Delimiters.from_header(text)
        records.append(
            Record(text[0].upper(), tuple(text.split(delimiters.field)), raw, delimiters)
        )
    return records


def ends_with_terminator(stream: bytes) -> bool:
    """True when the stream's last record is an L (message terminator) record."""
    body = stream.rstrip(b"\r\n")
    last = body[body.rfind(b"\r") + 1 :].lstrip(b"\n")
    if not last.startswith(b"L"):
        return False
    field = b"|"
    if stream.startswith(b"H") and len(stream) > 1:
        field = stream[1:2]
    return len(last) == 1 or last[1:2] == field


def to_messages(
    stream: bytes,
    profile: DeviceProfile,
    source: str,
    received_at: float,
    sequence: int,
) -> list[DeviceMessage]:
    """One DeviceMessage per patient (P record) in the message; one when there is no P."""
    records = split_records(stream)
    header = [r for r in records[:1] if r.kind == "H"]
    groups: list[list[Record]] = [[]]
    trailer: list[Record] = []
    for record in records[len(header) :]:
        if record.kind == "L":
            trailer.append(record)
        elif record.kind == "P" and any(r.kind == "P" for r in groups[-1]):
            groups.append([record])
        else:
            groups[-1].append(record)
    return [
        _message(header + group + trailer, profile, source, received_at, sequence)
        for group in groups
        if group or len(groups) == 1
    ]


def _message(
    records: list[Record],
    profile: DeviceProfile,
    source: str,
    received_at: float,
    sequence: int,
) -> DeviceMessage:
    identity = PatientIdentity()
    measurements: list[Measurement] = []
    lines: list[str] = []
    context = ""
    for record in records:
        if record.kind == "P":
            identity = patient_identity(record)
            context = "patient"
        elif record.kind == "O":
            context = "order"
        elif record.kind == "R":
            name, measurement, line = result(record, profile)
            context = name or "result"
            if measurement is not None:
                measurements.append(measurement)
            else:
                lines.append(line)
        elif record.kind == "C":
            comment = record.text(4)
            if comment:
                lines.append(f"Comment ({context or 'message'}): {comment}")
    return DeviceMessage(
        source=source,
        kind="measurements",
        identity=identity,
        received_at=received_at,
        measurements=tuple(measurements),
        text="\n".join(lines) or None,
        title=profile.output.document_title.meaning,
        raw=b"".join(r.raw + b"\r" for r in records),
        sequence=sequence,
        resent_until_acknowledged=True,
    )


def patient_identity(record: Record) -> PatientIdentity:
    """A P record's identity: practice-assigned ID (field 3, else laboratory field 4), name."""
    patient_id = record.text(3, "") or record.text(4, "") or None
    return PatientIdentity(
        patient_id=patient_id,
        patient_name=_person_name(record.components(6)),
        birth_date=_date(record.components(8)[0]),
        sex={"M": "M", "F": "F"}.get(record.components(9)[0].upper()),
    )


def result(record: Record, profile: DeviceProfile) -> tuple[str, Measurement | None, str]:
    """An R record as (test name, mapped measurement or None, text line for the report)."""
    test = record.components(3)
    name = test[3] if len(test) > 3 and test[3] else next((c for c in test if c), "")
    value = record.text(4, "")
    unit_text = record.text(5, "")
    flags = tuple(f for f in (record.text(7, ""), record.text(9, "")) if f)
    observed = _datetime(record.components(13)[0])
    line = " ".join(p for p in (name or "?", value, unit_text) if p)
    if flags:
        line += f" [{' '.join(flags)}]"
    mapping = profile.mapping(name) if name else None
    if mapping is None or not _is_decimal(value):
        return name, None, line
    unit = ucum_unit(mapping, unit_text)
    if unit is None:
        return name, None, line
    concept = Concept(mapping.concept.value, mapping.concept.scheme, mapping.concept.meaning)
    return name, Measurement(name, concept, value, unit, flags, observed), line


def ucum_unit(mapping: MeasurementMap, unit_text: str) -> str | None:
    """The UCUM code for the device's unit text, or None when the profile does not vouch for it."""
    if unit_text == mapping.unit:
        return mapping.unit
    if unit_text in mapping.device_units:
        return mapping.device_units[unit_text]
    if not unit_text and mapping.unit == "1":
        return "1"
    return None


def _is_decimal(value: str) -> bool:
    return len(value) <= _DS_MAX and _DECIMAL.fullmatch(value) is not None


def _person_name(parts: list[str]) -> str | None:
    # ASTM: last^first^middle^suffix^title; DICOM PN: family^given^middle^prefix^suffix.
    parts = [re.sub(r"[\^=\\]", " ", p) for p in [*parts, "", "", "", "", ""][:5]]
    last, first, middle, suffix, title = parts
    name = "^".join([last, first, middle, title, suffix]).rstrip("^")
    return name[:_PN_MAX].rstrip("^") or None


def _date(text: str) -> str | None:
    digits = text[:8]
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        return None
    return digits


_DT_FORMATS = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def _datetime(text: str) -> str | None:
    fmt = _DT_FORMATS.get(len(text))
    if fmt is None or not text.isdigit():
        return None
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return None
    return text


def _encoding(stream: bytes) -> str:
    # E1394 text is ASCII; instruments that send more use UTF-8 or Latin-1, told apart here.
    try:
        stream.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"
