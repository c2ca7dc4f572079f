"""The line-kv engine: reports line by line, their ends, their bounds, and bytes that are noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.serial.engine import Action, Deliver, Note
from gateway.ingest.serial.linekv import LineKvEngine
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile
from gateway.ingest.serial.profiles import load_profile
from tests.ingest.serial.ptyplay import play_over_ptys
from tests.peers import require_tool

BUILTIN = load_profile("line-kv")
IDLE = BUILTIN.link.idle_timeout
REPORT = (
    b"PATIENT ID: PID-1\nNAME: DOE, JANE\nACCESSION: ACC-1\nHR: 72 bpm\nSpO2: 97 %\nEND OF REPORT\n"
)


def profile(**link: Any) -> DeviceProfile:
    """The built-in profile with some link settings changed."""
    return BUILTIN.model_copy(update={"link": BUILTIN.link.model_copy(update=link)})


def engine(prof: DeviceProfile = BUILTIN, max_message_bytes: int = 1 << 20) -> LineKvEngine:
    return LineKvEngine(prof, "monitor-1", max_message_bytes)


def delivered(actions: list[Action]) -> list[DeviceMessage]:
    return [a.message for a in actions if isinstance(a, Deliver)]


def counters(actions: list[Action]) -> list[str]:
    return [a.counter for a in actions if isinstance(a, Note)]


def values(message: DeviceMessage) -> dict[str, tuple[str, str]]:
    return {m.name: (m.value, m.unit) for m in message.measurements}


def test_builtin_simulator_reports_become_coded_measurements_with_ucum_units() -> None:
    eng = engine()
    actions: list[Action] = []
    for i, text in enumerate(BUILTIN.simulator.messages):
        actions += eng.feed(text.encode(BUILTIN.link.encoding), float(i))
    first, second, third = delivered(actions)
    assert first.kind == "measurements"
    assert first.identity.patient_id == "PID-2001"
    assert first.identity.patient_name == "DOE^JANE"
    assert first.identity.accession_number == "ACC-7001"
    assert values(first)["NIBP-SYS"] == ("118", "mm[Hg]")
    assert values(first)["TEMP"] == ("36.8", "Cel")
    hr = first.measurements[0]
    assert (hr.concept.value, hr.concept.scheme, hr.concept.meaning) == (
        "8867-4",
        "LN",
        "Heart rate",
    )
    assert first.title == "Vital signs"
    assert [m.sequence for m in (first, second, third)] == [1, 2, 3]
    assert second.identity.patient_name == "MÜLLER^HANS"
    assert {m.name: m.flags for m in second.measurements}["SpO2"] == ("L",)
    # Not mapped (etCO2) or not in a unit the profile knows (TEMP in F): kept as text, verbatim.
    assert "etCO2: 31 mmHg" in (second.text or "")
    assert "etCO2" not in values(second)
    assert "TEMP: 97.9 F" in (third.text or "")
    assert "TEMP" not in values(third)
    assert "unit_not_mapped" in counters(actions)
    assert eng.next_deadline() is None  # every report ended at its terminator


def test_cr_lf_and_crlf_line_ends_read_the_same() -> None:
    results = []
    for eol in (b"\n", b"\r", b"\r\n"):
        (message,) = delivered(engine().feed(REPORT.replace(b"\n", eol), 0.0))
        results.append((values(message), message.text, message.identity))
    assert results[0] == results[1] == results[2]
    assert results[0][1] == "PATIENT ID: PID-1\nNAME: DOE, JANE\nACCESSION: ACC-1"


def test_bytes_split_anywhere_give_the_same_report() -> None:
    (whole,) = delivered(engine().feed(REPORT.replace(b"\n", b"\r\n"), 0.0))
    eng = engine()
    actions: list[Action] = []
    for i in range(len(REPORT) * 2):
        actions += eng.feed(REPORT.replace(b"\n", b"\r\n")[i : i + 1], 0.0)
    (split,) = delivered(actions)
    assert split == whole


def test_a_report_without_terminator_ends_after_the_idle_timeout() -> None:
    eng = engine(profile(terminator_pattern=None))
    assert delivered(eng.feed(b"PATIENT ID: PID-1\nHR: 60 bpm\nRR: 14 rpm", 100.0)) == []
    assert eng.next_deadline() == 100.0 + IDLE
    assert eng.poll(100.0 + IDLE - 0.01) == []
    actions = eng.poll(100.0 + IDLE)
    (message,) = delivered(actions)
    # The last line had no line end when the device went silent: still read, and counted.
    assert values(message) == {"HR": ("60", "/min"), "RR": ("14", "/min")}
    assert "unterminated_line" in counters(actions)
    assert message.received_at == 100.0 + IDLE
    assert eng.next_deadline() is None


def test_reports_are_read_on_while_earlier_ones_wait_for_the_queue() -> None:
    eng = engine()
    first = delivered(eng.feed(REPORT, 0.0))
    second = delivered(eng.feed(REPORT.replace(b"PID-1", b"PID-2"), 0.5))
    # No acknowledgement in this protocol: nothing waits for committed(), which has nothing to do.
    assert [m.identity.patient_id for m in first + second] == ["PID-1", "PID-2"]
    assert eng.committed(1, True, 1.0) == []
    assert eng.committed(2, False, 1.0) == []


def test_a_line_naming_another_patient_ends_the_report() -> None:
    eng = engine(profile(terminator_pattern=None))
    actions = eng.feed(b"PATIENT ID: PID-1\nHR: 60 bpm\nPATIENT ID: PID-2\nHR: 90 bpm\n", 0.0)
    actions += eng.poll(IDLE + 1)
    first, second = delivered(actions)
    assert (first.identity.patient_id, values(first)) == ("PID-1", {"HR": ("60", "/min")})
    assert (second.identity.patient_id, values(second)) == ("PID-2", {"HR": ("90", "/min")})
    assert "report_ended_by_patient_change" in counters(actions)


def test_an_identity_line_is_not_read_as_a_result() -> None:
    (message,) = delivered(engine().feed(b"PATIENT ID: 12345\nEND OF REPORT\n", 0.0))
    assert message.kind == "text"
    assert message.identity.patient_id == "12345"
    assert message.measurements == ()


def test_an_over_long_line_is_cut_and_counted_and_the_report_goes_on() -> None:
    eng = engine(profile(max_line_bytes=80))
    actions = eng.feed(b"X" * 500 + b"\nHR: 61 bpm\nEND OF REPORT\n", 0.0)
    (message,) = delivered(actions)
    assert values(message) == {"HR": ("61", "/min")}
    assert message.text == "X" * 80
    assert [n for n in actions if isinstance(n, Note) and n.counter == "line_too_long"] == [
        Note("line_too_long", "420 bytes cut")
    ]


def test_a_report_past_max_message_bytes_is_dropped_and_the_next_one_read() -> None:
    eng = engine(max_message_bytes=1024)
    flood = b"".join(b"COMMENT %d: no reading\n" % i for i in range(200))
    actions = eng.feed(b"PATIENT ID: PID-1\n" + flood + b"END OF REPORT\n", 0.0)
    assert delivered(actions) == []
    assert counters(actions).count("message_too_long") == 1
    assert eng.pending_bytes <= 1024
    (message,) = delivered(eng.feed(REPORT, 1.0))
    assert values(message) == {"HR": ("72", "/min"), "SpO2": ("97", "%")}


def test_the_rest_of_an_over_long_report_is_skipped_until_silence() -> None:
    eng = engine(profile(terminator_pattern=None), max_message_bytes=1024)
    actions = eng.feed(b"HR: 60 bpm\n" * 200, 0.0)
    actions += eng.poll(IDLE)
    assert delivered(actions) == []
    assert counters(actions) == ["message_too_long"]
    (message,) = delivered(eng.feed(b"HR: 70 bpm\n", 10.0) + eng.poll(10.0 + IDLE))
    assert values(message) == {"HR": ("70", "/min")}


def test_undecodable_bytes_are_replaced_and_counted_not_fatal() -> None:
    eng = engine(profile(encoding="utf-8"))
    actions = eng.feed(b"NOTE: caf\xe9 \xff\nHR: 70 bpm\nEND OF REPORT\n", 0.0)
    (message,) = delivered(actions)
    assert message.text == "NOTE: caf\ufffd \ufffd"
    assert values(message) == {"HR": ("70", "/min")}
    assert Note("decode_error", "2 bytes replaced") in actions


def test_control_bytes_are_removed_and_counted() -> None:
    actions = engine().feed(b"\x00\x02HR: 7\x070 bpm\x03\nEND OF REPORT\n", 0.0)
    (message,) = delivered(actions)
    assert values(message) == {"HR": ("70", "/min")}
    assert Note("control_bytes", "4 removed") in actions


def test_a_value_that_is_not_a_decimal_is_kept_as_text() -> None:
    prof = profile(field_pattern=r"^(?P<name>\w+):\s*(?P<value>\S+)\s*(?P<unit>\S*)$")
    actions = engine(prof).feed(b"HR: --- bpm\nSpO2: 98 %\nEND OF REPORT\n", 0.0)
    (message,) = delivered(actions)
    assert values(message) == {"SpO2": ("98", "%")}
    assert message.text == "HR: --- bpm"
    assert Note("value_not_numeric", "HR") in actions


def test_a_unit_the_profile_does_not_know_is_kept_as_text() -> None:
    actions = engine().feed(b"HR: 1.2 Hz\nEND OF REPORT\n", 0.0)
    (message,) = delivered(actions)
    assert message.kind == "text"
    assert message.text == "HR: 1.2 Hz"
    assert Note("unit_not_mapped", "HR") in actions


def test_blank_lines_and_a_lone_terminator_deliver_nothing() -> None:
    eng = engine()
    assert delivered(eng.feed(b"\r\n\r\n   \nEND OF REPORT\n\n", 0.0)) == []
    assert eng.next_deadline() is None


def test_reset_forgets_the_partial_report_and_counts_it() -> None:
    eng = engine()
    partial = b"PATIENT ID: PID-1\nHR: 7"
    eng.feed(partial, 0.0)
    assert eng.reset() == [Note("reset_discarded", f"{len(partial)} bytes")]
    assert eng.next_deadline() is None
    (message,) = delivered(eng.feed(REPORT, 1.0))
    assert message.identity.patient_id == "PID-1"
    assert eng.reset() == []


def test_two_identical_reports_at_different_times_are_two_observations() -> None:
    # line-kv has no acknowledgement, so the device never resends: the same values sent again
    # later are a new measurement and must not be taken for a duplicate in the queue.
    (a,) = delivered(engine().feed(REPORT, 0.0))
    (b,) = delivered(engine().feed(REPORT, 50.0))
    (c,) = delivered(engine().feed(REPORT, 50.0))
    assert a.raw == REPORT
    assert not a.resent_until_acknowledged
    assert a.digest_input != b.digest_input
    assert b.digest_input == c.digest_input


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=300),
                st.sampled_from([REPORT, b"\r\n", b"HR: 1 bpm\r", b"END OF REPORT\n"]),
            ),
            st.floats(min_value=0, max_value=8),
        ),
        max_size=40,
    ),
    encoding=st.sampled_from(["latin-1", "utf-8", "ascii", "cp437"]),
)
def test_random_bytes_never_raise_and_stay_bounded(
    chunks: list[tuple[bytes, float]], encoding: str
) -> None:
    bound = 1024
    eng = engine(profile(encoding=encoding, max_line_bytes=100), max_message_bytes=bound)
    now = 0.0
    for data, pause in chunks:
        now += pause
        actions = eng.poll(now) + eng.feed(data, now)
        for message in delivered(actions):
            assert len(message.raw) <= bound
            assert message.measurements or message.text
        assert eng.pending_bytes <= bound + 100
    deadline = eng.next_deadline()
    if deadline is not None:
        eng.poll(deadline)
    assert eng.pending_bytes == 0
    assert eng.next_deadline() is None


# -- the simulator on one end of a socat pty pair, the port thread and this engine on the other ---


@pytest.mark.peers
def test_simulator_reports_over_ptys_survive_noise_and_silence_mid_report(tmp_path: Path) -> None:
    require_tool("socat")
    prof = profile(idle_timeout=0.5)
    prof = prof.model_copy(
        update={"simulator": prof.simulator.model_copy(update={"pause_seconds": 0.1})}
    )
    # Noise before report 1; report 2 stops for 1.5 s halfway, longer than the idle timeout.
    played = play_over_ptys(tmp_path, prof, "noise:16@1,silence:1.5@2", expected=4)
    got, stats = played.got, played.reader.stats()
    ids = [m.identity.patient_id for m in got]
    assert ids == ["PID-2001", "PID-2002", None, "PID-2003"]
    # Report 1 is whole despite the noise merged into its first line; report 2's halves are
    # both delivered (the second, without identity, is held for reconciliation downstream).
    assert [m.name for m in got[0].measurements] == [
        "HR",
        "SpO2",
        "NIBP-SYS",
        "NIBP-DIA",
        "NIBP-MAP",
        "RR",
        "TEMP",
    ]
    assert [m.name for m in got[2].measurements][-1:] == ["TEMP"]
    assert "END OF REPORT" not in (got[2].text or "")
    assert stats["delivered"] == 4
    assert stats.get("control_bytes", 0) >= 1
