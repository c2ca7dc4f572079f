"""Fault specs and the pure byte transforms the simulator injects."""

from __future__ import annotations

import pytest

from gateway.simulate.faults import (
    Injection,
    astm_faults,
    at_wrong_rate,
    drop_middle,
    for_message,
    junk,
    noise,
    parse_injections,
)


def test_spec_names_kind_amount_and_message() -> None:
    got = parse_injections("bad-checksum:2, noise@3,silence:1.5@2")
    assert got == (
        Injection("bad-checksum", 2, 1),
        Injection("noise", 16, 3),
        Injection("silence", 1.5, 2),
    )
    assert for_message(got, 2) == (Injection("silence", 1.5, 2),)
    assert parse_injections("") == ()


@pytest.mark.parametrize("spec", ["static", "noise:x", "noise@0", "drop:-1", "noise@two"])
def test_bad_spec_is_refused_with_the_part_named(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_injections(spec)


def test_astm_faults_hit_the_first_frame_then_its_clean_retransmission() -> None:
    faults = astm_faults(parse_injections("bad-checksum:2,drop:4,flood:500,noise:5"))
    assert faults.bad_checksum_frames == {1, 2}
    assert (faults.drop_bytes_in_frame, faults.drop_count) == (3, 4)
    assert faults.flood_frames == 5
    assert len(faults.noise_before) == 5


def test_noise_never_holds_a_byte_a_protocol_acts_on() -> None:
    data = noise(2000)
    assert len(data) == 2000
    assert not set(data) & {0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x17, 0x0A, 0x0D, 0x0C}


def test_flood_is_one_endless_line() -> None:
    data = junk(10_000)
    assert len(data) == 10_000 and b"\n" not in data and b"\r" not in data


def test_dropped_bytes_come_from_the_middle() -> None:
    assert drop_middle(b"0123456789", 2) == b"01236789"


def test_same_rate_reads_back_the_bytes_and_a_wrong_rate_garbles_them() -> None:
    text = b"HR: 72 /min\r\n"
    assert at_wrong_rate(text, 9600, 9600) == text
    slow = at_wrong_rate(text, 4800, 9600)
    fast = at_wrong_rate(text, 19200, 9600)
    assert slow != text and fast != text
    assert b"HR" not in slow and b"HR" not in fast
