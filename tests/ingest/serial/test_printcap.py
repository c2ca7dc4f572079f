"""The print-capture engine: a print job rendered to the pages a printer would have produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.serial.engine import Action, Deliver, Note
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.printcap import PrintCaptureEngine, render, strip_escapes
from gateway.ingest.serial.profile import DeviceProfile
from gateway.ingest.serial.profiles import load_profile
from tests.ingest.serial.ptyplay import play_over_ptys
from tests.peers import require_tool

BUILTIN = load_profile("print-capture")
IDLE = BUILTIN.link.idle_timeout
ESC = b"\x1b"


def profile(**link: Any) -> DeviceProfile:
    """The built-in profile with some link settings changed."""
    return BUILTIN.model_copy(update={"link": BUILTIN.link.model_copy(update=link)})


def engine(prof: DeviceProfile = BUILTIN, max_message_bytes: int = 1 << 20) -> PrintCaptureEngine:
    return PrintCaptureEngine(prof, "ecg-1", max_message_bytes)


def delivered(actions: list[Action]) -> list[DeviceMessage]:
    return [a.message for a in actions if isinstance(a, Deliver)]


def job(eng: PrintCaptureEngine, data: bytes, at: float = 0.0) -> list[Action]:
    """Feed a whole job, then let it go silent."""
    return eng.feed(data, at) + eng.poll(at + IDLE)


def plain(data: bytes, columns: int = 80, lines_per_page: int = 66) -> str:
    return render(data, "cp437", columns, lines_per_page)[0]


def test_builtin_simulator_jobs_become_text_messages_with_pages_and_identity() -> None:
    eng = engine()
    ecg, echo = (
        delivered(job(eng, text.encode(BUILTIN.link.encoding), 10.0 * i))[0]
        for i, text in enumerate(BUILTIN.simulator.messages)
    )
    assert ecg.kind == echo.kind == "text"
    assert ecg.title == "EKG study"
    assert (ecg.identity.patient_id, ecg.identity.patient_name) == ("PID-3001", "DOE^JANE")
    assert ecg.identity.accession_number == "ACC-8001"
    assert (echo.identity.patient_id, echo.identity.patient_name) == ("PID-3002", "MÜLLER^HANS")
    pages = (ecg.text or "").split("\f")
    assert len(pages) == 2
    assert pages[0].startswith("CARDIOSCAN 12 - RESTING ECG REPORT")  # ESC @, ESC E removed
    assert "\nMeasurements\n" in pages[0]  # underlined by "_\b" overstrike
    assert pages[1].endswith("Unconfirmed report - to be reviewed by a physician.")
    assert "\x1b" not in (ecg.text or "") and "\b" not in (echo.text or "")
    assert "\nConclusion: Normal left ventricular" in (echo.text or "")  # bold by overstrike
    assert [ecg.sequence, echo.sequence] == [1, 2]


def test_the_job_ends_only_after_idle_timeout_of_silence() -> None:
    eng = engine()
    assert eng.next_deadline() is None
    assert eng.feed(b"Page one\r\n", 0.0) == []
    assert eng.feed(b"still page one\r\n", 4.0) == []
    assert eng.next_deadline() == 4.0 + IDLE
    assert eng.poll(4.0 + IDLE - 0.01) == []
    (message,) = delivered(eng.poll(4.0 + IDLE))
    assert message.text == "Page one\nstill page one"
    assert message.raw == b"Page one\r\nstill page one\r\n"
    assert message.received_at == 4.0 + IDLE
    assert eng.next_deadline() is None


def test_jobs_separated_by_silence_are_separate_messages_without_waiting_for_the_queue() -> None:
    eng = engine()
    first = delivered(job(eng, b"Name : A, B   Patient ID : P1\r\n", 0.0))
    second = delivered(job(eng, b"Name : C, D   Patient ID : P2\r\n", 10.0))
    assert [m.identity.patient_id for m in first + second] == ["P1", "P2"]
    assert [m.identity.patient_name for m in first + second] == ["A^B", "C^D"]
    assert eng.committed(1, True, 20.0) == []


def test_form_feeds_and_form_length_make_pages() -> None:
    assert plain(b"one\r\n\x0ctwo\x0c") == "one\ftwo"
    lines = b"".join(b"line %d\r\n" % i for i in range(25))
    pages = plain(lines, lines_per_page=10).split("\f")
    assert [len(p.split("\n")) for p in pages] == [10, 10, 5]


def test_leading_and_trailing_blank_pages_are_dropped_but_inner_ones_kept() -> None:
    assert plain(b"\x0c\x0cA\x0c\x0cB\x0c\x0c\r\n") == "A\f\fB"


def test_long_lines_wrap_at_the_printers_columns() -> None:
    assert plain(b"x" * 50, columns=20) == "x" * 20 + "\n" + "x" * 20 + "\n" + "x" * 10


def test_overstrike_by_backspace_and_carriage_return_keeps_the_letters() -> None:
    assert plain(b"B\bBo\bol\bld\bd") == "Bold"
    assert plain(b"_\bU_\bn_\bd_\be_\br") == "Under"
    assert plain(b"Under\r_____\r\n") == "Under"
    assert plain(b"AB\b\b\b\b\bC") == "CB"  # backspace stops at the margin


def test_tabs_move_to_the_next_eight_column_stop() -> None:
    assert plain(b"a\tb\r\n12345678\tc") == "a       b\n12345678        c"


def test_escp_sequences_are_removed_with_their_parameters_and_graphics() -> None:
    data = (
        ESC
        + b"@"  # reset
        + ESC
        + b"E"
        + b"Bold"
        + ESC
        + b"F"
        + ESC
        + b"3\x18"  # line spacing n/216 inch
        + ESC
        + b"K\x05\x00ABCDE"  # 5 columns of 8-dot graphics, printable bytes among them
        + ESC
        + b"*\x21\x02\x00XYZXYZ"  # 24-dot graphics: 2 columns, 3 bytes each
        + ESC
        + b"C\x00\x0b"  # form length in inches
        + ESC
        + b"(C\x02\x00\x10\x0e"  # ESC/P2 extended command with 2 data bytes
        + ESC
        + b"D\x08\x10\x00"  # tab stops, ended by NUL
        + b" text"
    )
    stripped, count = strip_escapes(data)
    assert stripped == b"Bold text"
    assert count == 9


def test_pcl_and_ansi_sequences_are_removed_with_their_data() -> None:
    data = (
        ESC
        + b"%-12345X"  # universal exit language
        + ESC
        + b"E"  # reset
        + ESC
        + b"&l1o2A"  # combined: landscape, letter paper
        + ESC
        + b"(s0p10h12V"  # font selection
        + ESC
        + b"(10U"  # symbol set
        + ESC
        + b"*b4W\x1b\x1b\x1bQ"  # raster row: 4 bytes of data, ESC bytes among them
        + ESC
        + b"&p3XRaw"  # transparent print data: not text
        + b"Report"
        + ESC
        + b"[1mline"
        + ESC
        + b"[0m"
    )
    stripped, count = strip_escapes(data)
    assert stripped == b"Reportline"
    assert count == 9


def test_a_sequence_cut_at_the_end_of_the_job_is_removed() -> None:
    assert strip_escapes(b"end" + ESC) == (b"end", 1)
    assert strip_escapes(b"end" + ESC + b"K\xff\xff") == (b"end", 1)
    assert strip_escapes(b"end" + ESC + b"*b99") == (b"end", 1)


def test_escape_sequences_and_control_bytes_are_counted() -> None:
    eng = engine()
    actions = job(eng, ESC + b"@" + ESC + b"E" + b"Hi\x0e\x0f\x07" + ESC + b"F\r\n")
    (message,) = delivered(actions)
    assert message.text == "Hi"
    assert Note("escape_sequences", "3 removed") in actions
    assert Note("control_bytes", "3 removed") in actions


def test_a_job_with_nothing_printable_delivers_nothing_and_is_counted() -> None:
    eng = engine()
    actions = job(eng, ESC + b"@\r\n\x0c  \r\n")
    assert delivered(actions) == []
    assert "empty_job" in [n.counter for n in actions if isinstance(n, Note)]
    assert eng.next_deadline() is None


def test_undecodable_bytes_are_replaced_and_counted() -> None:
    eng = engine(profile(encoding="utf-8"))
    actions = job(eng, b"Caf\xc3\xa9 \xff\xfe\r\n")
    (message,) = delivered(actions)
    assert message.text == "Café \ufffd\ufffd"
    assert Note("decode_error", "2 bytes replaced") in actions


def test_a_job_past_max_message_bytes_is_dropped_until_silence_then_the_next_job_read() -> None:
    eng = engine(max_message_bytes=1024)
    actions: list[Action] = []
    for i in range(20):
        actions += eng.feed(b"y" * 100, i * 0.1)
        assert eng.pending_bytes <= 1024
    actions += eng.poll(2.0 + IDLE)
    assert delivered(actions) == []
    assert [n.counter for n in actions if isinstance(n, Note)] == ["message_too_long"]
    (message,) = delivered(job(eng, b"next job\r\n", 20.0))
    assert message.text == "next job"


def test_reset_forgets_the_job_and_counts_it() -> None:
    eng = engine()
    eng.feed(b"half a job", 0.0)
    assert eng.reset() == [Note("reset_discarded", "10 bytes")]
    assert eng.next_deadline() is None
    assert eng.poll(100.0) == []
    assert eng.reset() == []


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(
            st.binary(max_size=400)
            | st.lists(
                st.sampled_from(
                    [
                        b"\x1b",
                        b"*b",
                        b"(s",
                        b"&p",
                        b"K",
                        b"\x08",
                        b"\x0c",
                        b"\r",
                        b"\n",
                        b"\t",
                        b"9",
                        b"W",
                        b"X",
                        b"ab",
                        b"_",
                    ]
                ),
                max_size=60,
            ).map(b"".join),
            st.floats(min_value=0, max_value=8),
        ),
        max_size=30,
    ),
    encoding=st.sampled_from(["cp437", "utf-8", "ascii"]),
)
def test_random_bytes_never_raise_and_stay_bounded(
    chunks: list[tuple[bytes, float]], encoding: str
) -> None:
    bound = 2048
    eng = engine(profile(encoding=encoding, columns=40, lines_per_page=10), bound)
    now = 0.0
    for data, pause in chunks:
        now += pause
        actions = eng.poll(now) + eng.feed(data, now)
        for message in delivered(actions):
            assert len(message.raw) <= bound
            for page in (message.text or "").split("\f"):
                lines = page.split("\n")
                assert len(lines) <= 10
                assert all(len(line) <= 40 for line in lines)
        assert eng.pending_bytes <= bound
    deadline = eng.next_deadline()
    if deadline is not None:
        eng.poll(deadline)
    assert eng.pending_bytes == 0
    assert eng.next_deadline() is None


@pytest.mark.peers
def test_simulator_print_jobs_over_ptys_become_one_message_each(tmp_path: Path) -> None:
    require_tool("socat")
    prof = profile(idle_timeout=0.5)
    # Dropped bytes in job 2 (a bad cable): the job is still filed, with what arrived.
    played = play_over_ptys(tmp_path, prof, "drop:5@2", expected=2)
    got, stats = played.got, played.reader.stats()
    assert [m.identity.patient_id for m in got] == ["PID-3001", "PID-3002"]
    whole = engine()
    expected = delivered(job(whole, prof.simulator.messages[0].encode("cp437")))[0]
    assert got[0].text == expected.text  # however the pty split the bytes
    assert got[0].raw == expected.raw
    assert (got[1].text or "").count("\n") >= 10
    assert stats["delivered"] == 2
    assert stats["escape_sequences"] == 2
