"""Property tests of the E1381 receiver against random and damaged byte streams.

No exception escapes, buffers stay bounded, garbage never yields a message, and a damaged line
never delivers a damaged message: what is queued is exactly what the instrument believes it
delivered.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.serial.astm_frames import ENQ, MAX_FRAME
from gateway.ingest.serial.astm_link import AstmReceiver
from gateway.ingest.serial.astm_sender import AstmSender
from gateway.ingest.serial.engine import Deliver
from tests.ingest.serial.astm_wire import Wire, builtin_profile, simulator_messages

PROFILE = builtin_profile()
MESSAGES = simulator_messages(PROFILE)
LIMIT = 2048

# Bytes a serial line's garbage is made of, weighted toward the protocol's own characters.
_byte = st.one_of(
    st.sampled_from(b"\x02\x03\x04\x05\x06\x0a\x0d\x15\x17|^LH0123456789ABCDEF"),
    st.integers(0, 255),
)
_chunks = st.lists(st.lists(_byte, max_size=300).map(bytes), max_size=30)


def assert_bounded(r: AstmReceiver) -> None:
    assert r._frame is None or len(r._frame) <= MAX_FRAME
    assert len(r._message) <= LIMIT


@given(_chunks, st.lists(st.floats(0, 100), min_size=30, max_size=30))
def test_random_bytes_never_raise_never_grow_and_never_deliver(
    chunks: list[bytes], gaps: list[float]
) -> None:
    r = AstmReceiver(PROFILE, "fuzz", LIMIT)
    now = 0.0
    for chunk, gap in zip(chunks, gaps, strict=False):
        actions = r.feed(chunk, now)
        assert not any(isinstance(a, Deliver) for a in actions)
        assert_bounded(r)
        now += gap
        r.poll(now)
        assert_bounded(r)


@given(_chunks)
def test_random_bytes_after_enq_never_deliver(chunks: list[bytes]) -> None:
    r = AstmReceiver(PROFILE, "fuzz", LIMIT)
    for chunk in chunks:
        actions = r.feed(bytes([ENQ]) + chunk, 0.0)
        assert not any(isinstance(a, Deliver) for a in actions)
        assert_bounded(r)


def _clean_length() -> int:
    w = Wire(AstmSender(PROFILE, MESSAGES), AstmReceiver(PROFILE, "clean", 1 << 20))
    w.run()
    return len(w.to_host)


CLEAN_LENGTH = _clean_length()


@given(st.integers(0, CLEAN_LENGTH - 1), st.sampled_from(["flip", "drop", "insert"]), _byte)
def test_one_damaged_byte_anywhere_never_delivers_a_damaged_message(
    at: int, how: str, value: int
) -> None:
    offset = 0

    def line(data: bytes) -> bytes:
        nonlocal offset
        start, offset = offset, offset + len(data)
        if not start <= at < offset:
            return data
        damaged = bytearray(data)
        i = at - start
        if how == "flip":
            damaged[i] ^= value or 0x40
        elif how == "drop":
            del damaged[i]
        else:
            damaged.insert(i, value)
        return bytes(damaged)

    w = Wire(AstmSender(PROFILE, MESSAGES), AstmReceiver(PROFILE, "one", 1 << 20), line=line)
    w.run()
    assert [m.raw for m in w.queued] == MESSAGES  # repaired by the protocol, none twice


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.floats(0.0, 0.5))
def test_over_a_lossy_line_what_is_queued_is_exactly_what_the_device_saw_acked(
    rng: random.Random, rate: float
) -> None:
    def line(data: bytes) -> bytes:
        if not data or rng.random() >= rate:
            return data
        damaged = bytearray(data)
        at = rng.randrange(len(damaged))
        how = rng.choice(["flip", "drop", "insert"])
        if how == "flip":
            damaged[at] ^= rng.randrange(1, 256)
        elif how == "drop":
            del damaged[at]
        else:
            damaged.insert(at, rng.randrange(256))
        return bytes(damaged)

    w = Wire(AstmSender(PROFILE, MESSAGES), AstmReceiver(PROFILE, "lossy", 1 << 20), line=line)
    w.run()
    assert [m.raw for m in w.queued] == [MESSAGES[i] for i in w.sender.delivered]
    assert sorted(w.sender.delivered + w.sender.abandoned) == [0, 1, 2]
