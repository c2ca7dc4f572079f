"""Error injection for the simulator: what a bad cable, a bad device or a wrong setting does.

A spec is a comma-separated list of ``kind[:amount][@message]``, e.g.
``bad-checksum:2,noise@3,silence:8@2``; ``message`` is the 1-based number of the message it
hits (default 1). The byte transforms here are pure, so they are tested without a port.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.ingest.serial.astm_sender import AstmFaults

# kind -> (default amount, what the amount means)
KINDS: dict[str, tuple[float, str]] = {
    "bad-checksum": (1, "frames sent with a wrong checksum (astm-e1394 only)"),
    "noise": (16, "random bytes sent before the message"),
    "drop": (3, "bytes lost from the middle of the message (first frame for astm-e1394)"),
    "partial": (0, "the message (astm-e1394: its first frame) cut off after half its bytes"),
    "silence": (8, "seconds of silence in the middle of the message"),
    "wrong-baud": (0, "the message sent at another rate (amount: the rate; 0: half)"),
    "flood": (65536, "junk bytes before the message (astm-e1394: that many junk frames / 100)"),
}


@dataclass(frozen=True)
class Injection:
    """One fault: its kind, its amount and the 1-based number of the message it hits."""

    kind: str
    amount: float
    message: int = 1


def parse_injections(spec: str) -> tuple[Injection, ...]:
    """Parse ``kind[:amount][@message],...``; ValueError naming the bad part."""
    out: list[Injection] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        head, _, where = part.partition("@")
        kind, _, amount_text = head.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r} (known: {', '.join(KINDS)})")
        try:
            amount = float(amount_text) if amount_text else KINDS[kind][0]
            message = int(where) if where else 1
        except ValueError:
            raise ValueError(f"bad fault {part!r}: use kind[:amount][@message]") from None
        if amount < 0 or message < 1:
            raise ValueError(f"bad fault {part!r}: amounts are >= 0, messages count from 1")
        out.append(Injection(kind, amount, message))
    return tuple(out)


def for_message(injections: tuple[Injection, ...], number: int) -> tuple[Injection, ...]:
    """The injections that hit message ``number`` (1-based)."""
    return tuple(i for i in injections if i.message == number)


def astm_faults(injections: tuple[Injection, ...]) -> AstmFaults:
    """The AstmSender faults for one message (one E1381 session; frames count from 1)."""
    found = {i.kind: i for i in injections}
    bad = int(found["bad-checksum"].amount) if "bad-checksum" in found else 0
    drop = found.get("drop")
    silence = found.get("silence")
    flood = found.get("flood")
    return AstmFaults(
        # The first frame is sent (and NAKed) ``bad`` times before a clean retransmission.
        bad_checksum_frames=frozenset(range(1, bad + 1)),
        noise_before=noise(int(found["noise"].amount)) if "noise" in found else b"",
        drop_bytes_in_frame=bad + 1 if drop is not None else None,
        drop_count=int(drop.amount) if drop is not None else 3,
        partial_frame=bad + 1 if "partial" in found else None,
        stall_after_frame=bad + 1 if silence is not None else None,
        stall_seconds=silence.amount if silence is not None else 0.0,
        flood_frames=max(1, int(flood.amount) // 100) if flood is not None else 0,
    )


def noise(count: int, seed: int = 7) -> bytes:
    """Random line noise (never a control byte E1381 acts on, so it stays noise)."""
    rng = random.Random(seed)  # noqa: S311 - noise, not a secret
    control = {0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x17, 0x0A, 0x0D, 0x0C}
    return bytes(b for b in (rng.randrange(256) for _ in range(count * 2)) if b not in control)[
        :count
    ]


def junk(count: int, seed: int = 11) -> bytes:
    """A flood: printable junk with no line end, so a line protocol sees one endless line."""
    rng = random.Random(seed)  # noqa: S311 - junk, not a secret
    return bytes(rng.randrange(0x21, 0x7F) for _ in range(count))


def drop_middle(data: bytes, count: int) -> bytes:
    """``data`` with ``count`` bytes lost from its middle."""
    middle = max(0, len(data) // 2 - count // 2)
    return data[:middle] + data[middle + count :]


def at_wrong_rate(data: bytes, sent_rate: float, read_rate: float) -> bytes:
    """What a UART reading at ``read_rate`` makes of 8N1 bytes sent at ``sent_rate``.

    A pseudo-terminal has no baud rate, so the simulator reproduces the effect: the receiver
    resynchronises on each falling edge, samples mid-bit at its own rate, and a byte whose stop
    bit reads 0 (a framing error) arrives as NUL, as Linux delivers it by default.
    """
    bits: list[int] = []
    for byte in data:
        bits += [0, *((byte >> i) & 1 for i in range(8)), 1, 1]  # start, data, stop, idle
    sent_bit = 1.0 / sent_rate
    read_bit = 1.0 / read_rate
    end = len(bits) * sent_bit

    def level(t: float) -> int:
        index = int(t / sent_bit)
        return bits[index] if index < len(bits) else 1

    out = bytearray()
    step = min(sent_bit, read_bit) / 4
    t = 0.0
    while t < end:
        if level(t):
            t += step
            continue
        value = 0
        for i in range(8):
            value |= level(t + (i + 1.5) * read_bit) << i
        stop_ok = level(t + 9.5 * read_bit)
        out.append(value if stop_ok else 0)
        t += 9.5 * read_bit
        # After a framing error the line may still be low: wait for it to go idle first.
        while t < end and not level(t):
            t += step
    return bytes(out)
