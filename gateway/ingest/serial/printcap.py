"""The print-capture protocol engine: a device printing a report to what it thinks is a printer.

The bytes of a job are collected until ``idle_timeout`` of silence, then rendered to the pages a
printer would have produced: printer escape sequences (Epson ESC/P, HP PCL, ANSI CSI) are removed
(counted), CR returns the carriage and backspace steps back, so overprinted bold and underlined
text reads as its letters; HT moves to the next 8-column stop, a line longer than ``columns``
wraps, FF and ``lines_per_page`` start a new page. The message is "text": the pages, their lines
joined by LF and the pages by FF. Identity comes from the profile's patterns searched in the text.

Like line-kv this protocol has no acknowledgement, so the engine never waits on the queue. A job
growing past ``max_message_bytes`` is dropped (counted) and the rest of it skipped until silence.
"""

from __future__ import annotations

import re

from gateway.identity import PatientIdentity
from gateway.ingest.serial.engine import Action, Deliver, Note
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile, PrintCaptureProtocol
from gateway.ingest.serial.profiles import IdentityPatterns, merge_identity

ESC = 0x1B
TAB_STOP = 8
_PCL_VALUE = re.compile(rb"[-+]?[0-9]{0,12}(?:\.[0-9]{0,6})?")
# ESC/P commands by the number of parameter bytes after the command letter (others take none).
_ESCP_ONE = frozenset(b" !+-/3AJNQRSUWajklpqrstwx")
_ESCP_TWO = frozenset(b"$?\\cef")
_ESCP_IMAGE = frozenset(b"KLYZ^")  # nL nH, then nL + 256 nH bytes (columns) of graphics
_ESCP_LISTS = frozenset(b"BDb")  # tab stops, ended by NUL
_ESCP_IMAGE_BYTES = {32: 3, 33: 3, 38: 3, 39: 3, 40: 3, 71: 6, 72: 6, 73: 6}  # ESC * m: per column


def strip_escapes(data: bytes) -> tuple[bytes, int]:
    """``data`` without printer escape sequences, and how many were removed."""
    out = bytearray()
    count = 0
    pos = 0
    while True:
        start = data.find(ESC, pos)
        if start < 0:
            out += data[pos:]
            return bytes(out), count
        out += data[pos:start]
        pos = _escape_end(data, start)
        count += 1


def _escape_end(data: bytes, start: int) -> int:
    """Index just past the escape sequence at ``start`` (never past the end of ``data``)."""
    n = len(data)
    k = start + 1
    if k >= n:
        return n
    command = data[k]
    if command == ord("["):  # ANSI CSI: parameters, intermediates, one final byte
        k += 1
        while k < n and 0x20 <= data[k] <= 0x3F:
            k += 1
        return min(k + 1, n)
    if k + 1 < n and _pcl_like(command, data[k + 1]):
        return _pcl_end(data, k)
    k += 1
    if command in _ESCP_ONE:
        return min(k + 1, n)
    if command == ord("C"):  # ESC C n lines, or ESC C NUL n inches
        return min(k + (2 if k < n and data[k] == 0 else 1), n)
    if command in _ESCP_TWO:
        return min(k + 2, n)
    if command in _ESCP_IMAGE:
        return _with_data(data, k, 1)
    if command == ord("*"):  # ESC * m nL nH, then graphics of m's density
        per_column = _ESCP_IMAGE_BYTES.get(data[k], 1) if k < n else 1
        return _with_data(data, k + 1, per_column)
    if command == ord("("):  # ESC/P2 ESC ( c nL nH, then nL + 256 nH bytes
        return _with_data(data, k + 1, 1)
    if command in _ESCP_LISTS:
        end = data.find(0, k, k + 33)
        return end + 1 if end >= 0 else min(k + 33, n)
    return k


def _with_data(data: bytes, k: int, per_unit: int) -> int:
    if k + 2 > len(data):
        return len(data)
    length = (data[k] + 256 * data[k + 1]) * per_unit
    return min(k + 2 + length, len(data))


def _pcl_like(family: int, byte: int) -> bool:
    """Whether ESC ``family`` ``byte`` starts PCL rather than the ESC/P command of that letter."""
    if family in b"()":  # PCL: symbol set or ESC ( s font; ESC/P2 uses ESC ( letter nL nH
        return chr(byte) in "0123456789s"
    return family in b"&*%" and (0x60 <= byte <= 0x7E or chr(byte) in "0123456789+-.")


def _pcl_end(data: bytes, k: int) -> int:
    """End of a PCL sequence ESC ! … ESC /: group character, then value and parameter pairs."""
    n = len(data)
    family = data[k]
    k += 1
    group = data[k] if 0x60 <= data[k] <= 0x7E else 0
    if group:
        k += 1
    while k < n:
        value = _PCL_VALUE.match(data, k)
        text = value.group() if value else b""
        k += len(text)
        if k >= n:
            return n
        parameter = data[k]
        k += 1
        if not 0x40 <= parameter <= 0x7E:
            return k - 1  # malformed: stop before the stray byte, it is text
        upper = parameter & 0xDF
        if upper == ord("W") or (family == ord("&") and group == ord("p") and upper == ord("X")):
            try:
                length = int(float(text or b"0"))
            except ValueError:
                length = 0
            k = min(k + max(length, 0), n)  # binary data (raster, fonts, transparent print)
        if parameter <= 0x5E:  # an upper-case parameter ends the sequence
            return k
    return n


class _Page:
    """What a printer does with decoded text: a cell grid per line, pages of lines."""

    def __init__(self, columns: int, lines_per_page: int) -> None:
        self.columns = columns
        self.lines_per_page = lines_per_page
        self.pages: list[list[str]] = []
        self.lines: list[str] = []
        self.cells: list[str] = []
        self.col = 0
        self.controls = 0

    def write(self, text: str) -> None:
        for ch in text:
            if ch in "\n\x0b":
                self.end_line()
            elif ch == "\r":
                self.col = 0
            elif ch == "\f":
                if self.cells:
                    self.end_line()
                self.end_page()
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch == "\t":
                self.col = min(self.columns, (self.col // TAB_STOP + 1) * TAB_STOP)
            elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
                self.controls += 1
            else:
                self.put(ch)

    def put(self, ch: str) -> None:
        if self.col >= self.columns:
            self.end_line()  # the printer wraps
        while len(self.cells) <= self.col:
            self.cells.append(" ")
        # Overstrike: a letter printed over another, or under an underline, stays readable.
        if ch not in " _" or self.cells[self.col] == " ":
            self.cells[self.col] = ch
        self.col += 1

    def end_line(self) -> None:
        self.lines.append("".join(self.cells).rstrip())
        self.cells = []
        self.col = 0
        if len(self.lines) >= self.lines_per_page:
            self.end_page()

    def end_page(self) -> None:
        self.pages.append(self.lines)
        self.lines = []

    def finish(self) -> list[str]:
        if self.cells:
            self.end_line()
        if self.lines:
            self.end_page()
        pages = []
        for lines in self.pages:
            while lines and not lines[-1]:
                lines.pop()
            pages.append("\n".join(lines))
        while pages and not pages[-1].strip():
            pages.pop()
        while pages and not pages[0].strip():
            pages.pop(0)
        return pages


def render(data: bytes, encoding: str, columns: int, lines_per_page: int) -> tuple[str, list[Note]]:
    """The printout of a job: its pages separated by FF, and notes on what was removed."""
    notes: list[Note] = []
    plain, escapes = strip_escapes(data)
    if escapes:
        notes.append(Note("escape_sequences", f"{escapes} removed"))
    try:
        text = plain.decode(encoding)
    except UnicodeDecodeError:
        text = plain.decode(encoding, errors="replace")
        notes.append(Note("decode_error", f"{text.count(chr(0xFFFD))} bytes replaced"))
    page = _Page(columns, lines_per_page)
    page.write(text)
    if page.controls:
        notes.append(Note("control_bytes", f"{page.controls} removed"))
    return "\f".join(page.finish()), notes


class PrintCaptureEngine:
    """ProtocolEngine for devices that print their report (see the module docstring)."""

    def __init__(self, profile: DeviceProfile, source: str, max_message_bytes: int) -> None:
        if not isinstance(profile.link, PrintCaptureProtocol):
            raise ValueError(f"profile {profile.name!r} is not a print-capture profile")
        self.profile = profile
        self.link = profile.link
        self.source = source
        self.max_message_bytes = max_message_bytes
        self._identity = IdentityPatterns.of(profile.link)
        self._job = bytearray()
        self._discarding = False  # the job outgrew max_message_bytes: skip to the silence
        self._last: float | None = None
        self._next_token = 1
        self._sequence = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of the job being collected (bounded; for tests and status)."""
        return len(self._job)

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the device: part of the current print job."""
        if not data:
            return []
        self._last = now
        if self._discarding:
            return []
        if len(self._job) + len(data) > self.max_message_bytes:
            self._job.clear()
            self._discarding = True
            return [Note("message_too_long", f"over {self.max_message_bytes} bytes")]
        self._job += data
        return []

    def poll(self, now: float) -> list[Action]:
        """End the job after idle_timeout of silence."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        self._discarding = False
        job = bytes(self._job)
        self._job.clear()
        return self._finish(job, now) if job else []

    def committed(self, token: int, ok: bool, now: float) -> list[Action]:
        """Nothing to do: a printer port is never acknowledged."""
        return []

    def next_deadline(self) -> float | None:
        """The idle end of the job being collected, if any."""
        if (self._job or self._discarding) and self._last is not None:
            return self._last + self.link.idle_timeout
        return None

    def reset(self) -> list[Action]:
        """Forget the job being collected (counted)."""
        lost = len(self._job)
        self._job.clear()
        self._discarding = False
        self._last = None
        return [Note("reset_discarded", f"{lost} bytes")] if lost else []

    def _finish(self, job: bytes, now: float) -> list[Action]:
        text, notes = render(job, self.link.encoding, self.link.columns, self.link.lines_per_page)
        actions: list[Action] = list(notes)
        if not text.strip():
            actions.append(Note("empty_job", f"{len(job)} bytes, nothing printable"))
            return actions
        found, identity_notes = self._identity.find(text)
        actions += identity_notes
        self._sequence += 1
        message = DeviceMessage(
            source=self.source,
            kind="text",
            identity=merge_identity(PatientIdentity(), found),
            received_at=now,
            text=text,
            title=self.profile.output.document_title.meaning,
            raw=job,
            sequence=self._sequence,
        )
        actions.append(Deliver(message, self._next_token))
        self._next_token += 1
        return actions
