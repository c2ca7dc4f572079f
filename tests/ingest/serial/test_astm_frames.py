"""E1381 frames: layout, checksum, the 240-character limit and the checks a receiver makes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.serial.astm_frames import (
    MAX_FRAME,
    MAX_TEXT,
    RESTRICTED,
    Frame,
    FrameError,
    build_frame,
    checksum,
    frame_message,
    parse_frame,
)


def test_frame_layout_and_checksum_follow_e1381() -> None:
    # "1", "A", ETX = 0x31 + 0x41 + 0x03 = 0x75
    assert build_frame(1, b"A", final=True) == b"\x021A\x0375\r\n"
    # ETB instead of ETX: 0x31 + 0x41 + 0x17 = 0x89
    assert build_frame(1, b"A", final=False) == b"\x021A\x1789\r\n"


def test_checksum_is_modulo_256_in_uppercase_hex() -> None:
    assert checksum(bytes([0xFF, 0xFF, 0x03])) == b"01"
    assert checksum(b"7" + b"\xfa" + b"\x03") == b"34"


def test_a_good_frame_parses_to_number_text_and_end_mark() -> None:
    assert parse_frame(build_frame(7, b"R|1|^^^pH|7.41\r", True)) == Frame(
        7, b"R|1|^^^pH|7.41\r", True
    )
    assert parse_frame(build_frame(0, b"", False)) == Frame(0, b"", False)


def test_a_wrong_checksum_is_reported_as_bad_checksum() -> None:
    frame = bytearray(build_frame(2, b"P|1|X\r", True))
    frame[4] ^= 0x01  # one text byte changed in transit
    result = parse_frame(bytes(frame))
    assert isinstance(result, FrameError)
    assert result.reason == "bad_checksum"


def test_a_lower_case_checksum_is_accepted() -> None:
    frame = build_frame(1, b"\xfa", True)  # 0x31 + 0xFA + 0x03 = 0x12E: checksum 2E
    lowered = frame[:-4] + frame[-4:-2].lower() + frame[-2:]
    assert frame[-4:-2] != frame[-4:-2].lower()
    assert parse_frame(lowered) == Frame(1, b"\xfa", True)


def test_frames_without_their_framing_are_malformed() -> None:
    good = build_frame(3, b"O|1\r", True)
    for broken in (
        good[1:],  # no STX
        good[:-1],  # no LF
        good.replace(b"\x023", b"\x029"),  # frame number 9
        b"\x02" + b"3O|1\rX" + checksum(b"3O|1\rX") + b"\r\n",  # no ETX/ETB end mark
        b"\x02\r\n",  # too short
        b"\x02" + b"1" + b"x" * (MAX_TEXT + 1) + b"\x0300\r\n",  # too long
    ):
        result = parse_frame(broken)
        assert isinstance(result, FrameError), broken


def test_restricted_characters_in_text_are_refused() -> None:
    body = b"1H|\x05|\r\x03"  # an ENQ inside the text
    frame = b"\x02" + body + checksum(body) + b"\r\n"
    result = parse_frame(frame)
    assert isinstance(result, FrameError)
    assert result.reason == "restricted_character"


def test_a_record_longer_than_240_characters_continues_in_etb_frames() -> None:
    record = b"C|1|I|" + b"x" * 500 + b"\r"
    frames = list(frame_message(record + b"L|1|N\r"))
    parsed = [parse_frame(f) for f in frames]
    assert all(isinstance(p, Frame) for p in parsed)
    assert [len(f) for f in frames[:2]] == [MAX_FRAME, MAX_FRAME]
    assert [(p.number, p.final) for p in parsed if isinstance(p, Frame)] == [
        (1, False),
        (2, False),
        (3, True),
        (4, True),
    ]
    assert b"".join(p.text for p in parsed if isinstance(p, Frame)) == record + b"L|1|N\r"


def test_frame_numbers_run_one_to_seven_then_zero() -> None:
    records = b"".join(b"R|%d\r" % i for i in range(10))
    numbers = [f[1] - 0x30 for f in frame_message(records)]
    assert numbers == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2]


_text = st.binary(max_size=700).map(lambda b: bytes(c for c in b if c not in RESTRICTED))


@given(_text)
def test_framing_then_parsing_gives_back_the_record_stream(stream: bytes) -> None:
    frames = list(frame_message(stream))
    assert all(len(f) <= MAX_FRAME for f in frames)
    parsed = [parse_frame(f) for f in frames]
    assert all(isinstance(p, Frame) for p in parsed)
    assert b"".join(p.text for p in parsed if isinstance(p, Frame)) == stream


@given(st.binary(max_size=400))
def test_parse_frame_never_raises_on_random_bytes(data: bytes) -> None:
    result = parse_frame(data)
    assert isinstance(result, Frame | FrameError)
