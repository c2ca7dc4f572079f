"""The line-kv protocol engine: ``name: value unit`` reports, one result per line.

Lines end at CR, LF or CR LF. Each line is decoded in the profile's encoding and tried, in this
order, as the terminator, as an identity line (patient ID, name, accession number patterns) and
as a result (``field_pattern``). A result the profile maps, with a decimal value and a unit the
profile knows, becomes a Measurement; every other non-blank line is kept, verbatim, in the
message's text, so nothing the device said is dropped and nothing is given a guessed code or
unit. A report ends at the terminator line, after ``idle_timeout`` of silence, or when a line
names another patient than the report already has (two patients never share a message).

The protocol has no acknowledgement: a report is delivered and the engine reads on at once, so
nothing waits on the queue. Bounds: a line longer than ``max_line_bytes`` is cut (counted); a
report growing past ``max_message_bytes`` is dropped (counted) and the rest of it, up to its end,
skipped; bytes the encoding cannot decode are replaced (counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.identity import PatientIdentity
from gateway.ingest.serial.astm_records import ucum_unit
from gateway.ingest.serial.engine import Action, Deliver, Note
from gateway.ingest.serial.message import Concept, DeviceMessage, Measurement
from gateway.ingest.serial.profile import DeviceProfile, LineKvProtocol
from gateway.ingest.serial.profiles import IdentityPatterns, merge_identity

_EOL = re.compile(rb"[\r\n]")
# C0 and C1 controls other than TAB: line noise, never report text.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_DS_MAX = 16  # a DICOM Decimal String holds at most 16 characters


def decode_line(raw: bytes, encoding: str) -> tuple[str, list[Note]]:
    """Text of one line: undecodable bytes replaced, control characters removed (both counted)."""
    notes: list[Note] = []
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        text = raw.decode(encoding, errors="replace")
        notes.append(Note("decode_error", f"{text.count(chr(0xFFFD))} bytes replaced"))
    text, controls = _CONTROLS.subn("", text)
    if controls:
        notes.append(Note("control_bytes", f"{controls} removed"))
    return text, notes


@dataclass
class _Report:
    """The report being read: its lines so far."""

    raw: bytearray = field(default_factory=bytearray)
    identity: PatientIdentity = field(default_factory=PatientIdentity)
    measurements: list[Measurement] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    unmapped: int = 0

    @property
    def has_content(self) -> bool:
        return bool(self.measurements or self.text)


class LineKvEngine:
    """ProtocolEngine for line-kv devices (see the module docstring)."""

    def __init__(self, profile: DeviceProfile, source: str, max_message_bytes: int) -> None:
        if not isinstance(profile.link, LineKvProtocol):
            raise ValueError(f"profile {profile.name!r} is not a line-kv profile")
        link = profile.link
        self.profile = profile
        self.source = source
        self.max_message_bytes = max_message_bytes
        self._encoding = link.encoding
        self._idle = link.idle_timeout
        self._field = re.compile(link.field_pattern)
        self._terminator = (
            re.compile(link.terminator_pattern) if link.terminator_pattern is not None else None
        )
        self._identity = IdentityPatterns.of(link)
        self._max_line = min(link.max_line_bytes, max_message_bytes)
        self._line = bytearray()
        self._cut = 0  # bytes of the current line past max_line, skipped
        self._after_cr = False  # an LF right after a CR ends no second line
        self._report: _Report | None = None
        self._discarding = False  # the report outgrew max_message_bytes: skip to its end
        self._last: float | None = None  # when the last byte came
        self._next_token = 1
        self._sequence = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes held for the line and report being read (bounded; for tests and status)."""
        return len(self._line) + (len(self._report.raw) if self._report else 0)

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the device."""
        actions: list[Action] = []
        if data:
            self._last = now
        pos = 0
        while pos < len(data):
            if self._after_cr:
                self._after_cr = False
                if data[pos] == 0x0A:
                    pos += 1
                    continue
            eol = _EOL.search(data, pos)
            end = eol.start() if eol else len(data)
            self._append(data[pos:end])
            if eol is None:
                break
            self._after_cr = data[end] == 0x0D
            actions += self._end_line(now)
            pos = end + 1
        return actions

    def poll(self, now: float) -> list[Action]:
        """End the report after idle_timeout of silence (a last line without its end included)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        actions: list[Action] = []
        if self._line or self._cut:
            actions.append(Note("unterminated_line", f"{len(self._line) + self._cut} bytes"))
            actions += self._end_line(now)
        self._discarding = False
        self._after_cr = False
        return actions + self._finish(now)

    def committed(self, token: int, ok: bool, now: float) -> list[Action]:
        """Nothing to do: line-kv devices are never acknowledged."""
        return []

    def next_deadline(self) -> float | None:
        """The idle end of the report being read, if any."""
        busy = self._line or self._cut or self._report is not None or self._discarding
        if not busy or self._last is None:
            return None
        return self._last + self._idle

    def reset(self) -> list[Action]:
        """Forget the line and report being read (counted)."""
        lost = self.pending_bytes + self._cut
        self._line.clear()
        self._cut = 0
        self._after_cr = False
        self._report = None
        self._discarding = False
        self._last = None
        return [Note("reset_discarded", f"{lost} bytes")] if lost else []

    def _append(self, chunk: bytes) -> None:
        room = self._max_line - len(self._line)
        self._line += chunk[:room]
        if len(chunk) > room:
            self._cut += len(chunk) - room

    def _end_line(self, now: float) -> list[Action]:
        raw = bytes(self._line)
        actions: list[Action] = []
        if self._cut:
            actions.append(Note("line_too_long", f"{self._cut} bytes cut"))
        self._line.clear()
        self._cut = 0
        text, notes = decode_line(raw, self._encoding)
        actions += notes
        if self._terminator is not None and self._terminator.search(text):
            self._discarding = False
            if self._report is not None:
                self._report.raw += raw + b"\n"
            return actions + self._finish(now)
        if self._discarding:
            return actions
        return actions + self._take(raw, text.strip(), now)

    def _take(self, raw: bytes, text: str, now: float) -> list[Action]:
        actions: list[Action] = []
        found, notes = self._identity.find(text) if text else ({}, [])
        actions += notes
        report = self._report
        if report is not None and report.has_content and _other_patient(report.identity, found):
            actions.append(Note("report_ended_by_patient_change"))
            actions += self._finish(now)
            report = None
        if report is None:
            if not text:
                return actions  # blank lines between reports belong to none
            report = self._report = _Report()
        if len(report.raw) + len(raw) + 1 > self.max_message_bytes:
            actions.append(Note("message_too_long", f"over {self.max_message_bytes} bytes"))
            self._report = None
            self._discarding = True
            return actions
        report.raw += raw + b"\n"
        if not text:
            return actions
        if found:
            report.identity = merge_identity(report.identity, found)
            report.text.append(text)
            return actions
        match = self._field.search(text)
        if match is None:
            report.text.append(text)
            return actions
        measurement, note = self._measurement(match)
        if measurement is None:
            report.unmapped += 1
            report.text.append(text)
            if note is not None:
                actions.append(note)
        else:
            report.measurements.append(measurement)
        return actions

    def _measurement(self, match: re.Match[str]) -> tuple[Measurement | None, Note | None]:
        groups = match.groupdict()
        name = (groups.get("name") or "").strip()
        value = (groups.get("value") or "").strip()
        mapping = self.profile.mapping(name)
        if mapping is None:
            return None, None  # counted per report; the name may be anything the device prints
        if not _DECIMAL.fullmatch(value) or len(value) > _DS_MAX:
            return None, Note("value_not_numeric", mapping.match)
        unit = ucum_unit(mapping, (groups.get("unit") or "").strip())
        if unit is None:
            return None, Note("unit_not_mapped", mapping.match)
        flag = (groups.get("flag") or "").strip()
        concept = Concept(mapping.concept.value, mapping.concept.scheme, mapping.concept.meaning)
        return Measurement(name, concept, value, unit, (flag,) if flag else ()), None

    def _finish(self, now: float) -> list[Action]:
        report = self._report
        self._report = None
        if report is None or not report.has_content:
            return []
        actions: list[Action] = []
        if report.unmapped:
            actions.append(Note("unmapped_results", f"{report.unmapped} kept as text"))
        self._sequence += 1
        message = DeviceMessage(
            source=self.source,
            kind="measurements" if report.measurements else "text",
            identity=report.identity,
            received_at=now,
            measurements=tuple(report.measurements),
            text="\n".join(report.text) or None,
            title=self.profile.output.document_title.meaning,
            raw=bytes(report.raw),
            sequence=self._sequence,
        )
        token = self._next_token
        self._next_token += 1
        actions.append(Deliver(message, token))
        return actions


def _other_patient(known: PatientIdentity, found: dict[str, str]) -> bool:
    new_id = found.get("patient_id")
    return bool(known.patient_id and new_id and new_id != known.patient_id)
