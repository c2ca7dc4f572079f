"""`dicom-gateway check-profile FILE`: validate a device profile and show what it will do.

Every problem is listed with its key and line (exit 2). A valid profile is summarised: protocol
settings, the measurement mapping, the DICOM output, and each simulator message read through the
profile as the gateway would read it, so an engineer sees which results become coded
measurements and which stay text before a device is ever connected. Identity is shown as which
fields were found, never their values.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from gateway.ingest.serial.engine import Action, Deliver, Note
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import (
    AstmProtocol,
    DeviceProfile,
    LineKvProtocol,
    PrintCaptureProtocol,
)
from gateway.ingest.serial.profiles import ProfileError, load_profile, make_engine

TRIAL_BOUND = 64 * 1024 * 1024  # the largest max_message_bytes the config allows


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check-profile`` to the ``dicom-gateway`` parser."""
    check = subparsers.add_parser(
        "check-profile", help="validate a device profile and show what it does"
    )
    check.add_argument("profile", help="profile TOML file, or a built-in profile's name")
    check.set_defaults(func=cmd_check_profile)


def cmd_check_profile(args: argparse.Namespace) -> int:
    """Validate, then summarise; 2 when the profile has problems."""
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        for problem in exc.problems:
            print(f"profile error: {problem}", file=sys.stderr)
        return 2
    print(summary(profile))
    return 0


def summary(profile: DeviceProfile) -> str:
    """What the profile does, in a few lines an engineer can check against the device's manual."""
    lines = [f"profile {profile.name}: {profile.description or '(no description)'}"]
    lines += _link_lines(profile)
    lines.append(f"measurements mapped: {len(profile.measurement)}")
    for m in profile.measurement:
        units = ", ".join(f"{text!r} -> {ucum}" for text, ucum in m.device_units.items())
        lines.append(
            f"  {m.match} -> {m.concept.scheme} {m.concept.value} {m.concept.meaning!r} "
            f"[{m.unit}]" + (f"; device units {units}" if units else "")
        )
    out = profile.output
    title = out.document_title
    text_as = ["encapsulated-pdf"] * out.text_pdf + ["basic-text-sr"] * out.text_sr
    documents = [f"text as {' and '.join(text_as) or 'nothing'}"]
    if not isinstance(profile.link, PrintCaptureProtocol):
        documents.insert(0, f"measurements as {out.measurements}")
    lines.append(
        f"output: {', '.join(documents)}; title {title.scheme} {title.value} {title.meaning!r}"
        + (f"; series {out.series_description!r}" if out.series_description else "")
    )
    messages = profile.simulator.messages
    lines.append(
        f"simulator: {len(messages)} message(s), {profile.simulator.pause_seconds} s apart"
    )
    for number, text in enumerate(messages, start=1):
        lines.append(f"  message {number}: {_trial(profile, text)}")
    return "\n".join(lines)


def _link_lines(profile: DeviceProfile) -> list[str]:
    link = profile.link
    if isinstance(link, AstmProtocol):
        return [
            f"protocol astm-e1394: frame ACK timeout {link.frame_ack_timeout} s, receive timeout "
            f"{link.receive_timeout} s, {link.max_retransmissions} retransmissions, contention "
            f"wait {link.contention_wait} s"
        ]
    identity = [
        label
        for label, pattern in (
            ("patient ID", link.patient_id_pattern),
            ("patient name", link.patient_name_pattern),
            ("accession number", link.accession_pattern),
        )
        if pattern is not None
    ]
    found = f"identity patterns: {', '.join(identity) or 'none (objects are held unbound)'}"
    if isinstance(link, LineKvProtocol):
        end = (
            f"at a line matching {link.terminator_pattern!r} or after {link.idle_timeout} s idle"
            if link.terminator_pattern
            else f"after {link.idle_timeout} s idle"
        )
        return [
            f"protocol line-kv: {link.encoding}, lines up to {link.max_line_bytes} bytes, "
            f"a report ends {end}",
            f"  result lines: {link.field_pattern!r}",
            f"  {found}",
        ]
    return [
        f"protocol print-capture: {link.encoding}, {link.columns} columns, "
        f"{link.lines_per_page} lines per page, a job ends after {link.idle_timeout} s idle",
        f"  {found}",
    ]


def _trial(profile: DeviceProfile, text: str) -> str:
    """One simulator message read through the profile, described without patient data."""
    if isinstance(profile.link, AstmProtocol):
        from gateway.ingest.serial.astm_records import encode_records, to_messages

        try:
            stream = encode_records(text.splitlines())
        except ValueError as exc:
            return f"cannot be sent: {exc}"
        return "; ".join(_describe(m, []) for m in to_messages(stream, profile, "check", 0.0, 1))
    engine = make_engine(profile, "check", TRIAL_BOUND)
    actions: list[Action] = engine.feed(text.encode(profile.link.encoding), 0.0)
    deadline = engine.next_deadline()
    if deadline is not None:
        actions += engine.poll(deadline)
    notes = [a for a in actions if isinstance(a, Note)]
    messages = [a.message for a in actions if isinstance(a, Deliver)]
    if not messages:
        return "nothing delivered" + _notes(notes)
    return "; ".join(_describe(m, notes) for m in messages)


def _describe(message: DeviceMessage, notes: list[Note]) -> str:
    fields = [
        label
        for label, value in (
            ("patient ID", message.identity.patient_id),
            ("name", message.identity.patient_name),
            ("accession", message.identity.accession_number),
        )
        if value
    ]
    text_lines = len(message.text.split("\n")) if message.text else 0
    if message.kind == "text" and message.text is not None and "\f" in message.text:
        body = f"text, {message.text.count(chr(12)) + 1} pages"
    elif message.kind == "text":
        body = f"text, {text_lines} line(s)"
    else:
        names = ", ".join(m.name for m in message.measurements)
        body = f"{len(message.measurements)} measurement(s) ({names}), {text_lines} line(s) as text"
    return f"{body}; identity: {', '.join(fields) or 'none'}" + _notes(notes)


def _notes(notes: list[Note]) -> str:
    if not notes:
        return ""
    counts = Counter(n.counter + (f" ({n.detail})" if n.detail else "") for n in notes)
    return "; notes: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())
