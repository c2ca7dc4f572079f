"""The E1381 receiver (host) and sender (instrument) against each other and against raw bytes.

Every error the issue lists: a bad checksum NAKed and the retransmission accepted, noise,
partial frames, silence mid-message, a frame flood, contention; plus the gateway's own rule that
the frame completing a message is ACKed only once the message is queued.
"""

from __future__ import annotations

import pytest

from gateway.ingest.serial.astm_frames import ACK, ENQ, EOT, NAK, build_frame, frame_message
from gateway.ingest.serial.astm_link import AstmReceiver
from gateway.ingest.serial.astm_records import encode_records
from gateway.ingest.serial.astm_sender import AstmFaults, AstmSender
from gateway.ingest.serial.engine import Action, Deliver, Note, Send
from gateway.ingest.serial.profile import DeviceProfile
from tests.ingest.serial.astm_wire import Wire, builtin_profile, simulator_messages

PROFILE = builtin_profile()
MESSAGES = simulator_messages(PROFILE)
SMALL = encode_records(["H|\\^&|||T", "P|1|PID-9", "R|1|^^^pH|7.40", "L|1|N"])
ERRORS = {
    "bad_checksum",
    "malformed",
    "restricted_character",
    "wrong_frame_number",
    "partial_frame",
    "frame_too_long",
    "message_too_long",
    "receive_timeout",
    "incomplete_message",
    "noise",
}


def wire(
    faults: AstmFaults | None = None,
    messages: list[bytes] | None = None,
    profile: DeviceProfile = PROFILE,
    max_message_bytes: int = 1 << 20,
) -> Wire:
    sender = AstmSender(profile, MESSAGES if messages is None else messages, faults)
    return Wire(sender, AstmReceiver(profile, "bga", max_message_bytes))


def sends(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def counters(actions: list[Action]) -> list[str]:
    return [a.counter for a in actions if isinstance(a, Note)]


def delivers(actions: list[Action]) -> list[Deliver]:
    return [a for a in actions if isinstance(a, Deliver)]


def test_a_clean_line_delivers_every_message_once_in_order() -> None:
    w = wire()
    w.run()
    assert w.sender.delivered == [0, 1, 2]
    assert [m.raw for m in w.queued] == MESSAGES
    assert [m.identity.patient_id for m in w.queued] == ["PID-1001", "PID-1002", "PID-1003"]
    assert [m.sequence for m in w.queued] == [1, 2, 3]
    assert not set(w.host_counts()) & ERRORS


def test_the_final_frame_is_acked_only_after_the_message_is_committed() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    frames = list(frame_message(SMALL))
    assert sends(r.feed(bytes([ENQ]), 0.0)) == bytes([ACK])
    for frame in frames[:-1]:
        assert sends(r.feed(frame, 1.0)) == bytes([ACK])
    last = r.feed(frames[-1], 2.0)
    assert sends(last) == b""  # no reply yet: the message is not queued
    (deliver,) = delivers(last)
    assert deliver.message.raw == SMALL
    assert deliver.message.received_at == 2.0
    assert r.next_deadline() is None  # we, not the instrument, are the ones waiting
    assert sends(r.committed(deliver.token, True, 2.5)) == bytes([ACK])
    assert r.feed(bytes([EOT]), 3.0) == []


def test_a_message_that_cannot_be_queued_is_naked_and_its_retransmission_delivered() -> None:
    refusals = iter([False, False])
    w = wire(messages=[SMALL])
    w.commit = lambda _m: next(refusals, True)
    w.run()
    assert w.sender.delivered == [0]
    assert len(w.delivered) == 3  # twice refused, then queued
    assert {m.digest_input for m in w.delivered} == {w.queued[0].digest_input}
    assert w.host_counts()["not_queued"] == 2
    assert w.device_counts()["nak"] == 2


def test_a_queue_that_stays_full_makes_the_instrument_give_up_and_repeat_later() -> None:
    w = wire(messages=[SMALL])
    w.commit = lambda _m: False
    w.run()
    assert w.queued == []
    assert w.sender.abandoned == [0]
    # each attempt: the final frame NAKed six times, then EOT; three attempts in all
    assert w.host_counts()["not_queued"] == 3 * 6
    assert w.device_counts()["aborted"] == 3


def test_a_bad_checksum_is_naked_and_the_retransmission_accepted() -> None:
    w = wire(AstmFaults(bad_checksum_frames={2, 9}))
    w.run()
    assert w.host_counts()["bad_checksum"] == 2
    assert w.device_counts()["nak"] == 2
    assert [m.raw for m in w.queued] == MESSAGES


def test_noise_between_messages_is_counted_and_the_messages_still_arrive() -> None:
    w = wire(AstmFaults(noise_before=b"\x00\xff~~garbage\r\n\x03\x17\x06"))
    w.run()
    assert w.host_counts()["noise"] == 3
    assert [m.raw for m in w.queued] == MESSAGES


def test_noise_inside_a_transfer_between_frames_is_ignored() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    stream = bytes([ENQ]) + b"\xff\x00".join(frame_message(SMALL)) + b"zz"
    actions = r.feed(stream, 0.0)
    (deliver,) = delivers(actions)
    assert deliver.message.raw == SMALL
    assert "noise" in counters(actions)
    assert NAK not in sends(actions)


def test_bytes_lost_inside_a_frame_get_a_nak_and_the_retransmission_is_accepted() -> None:
    w = wire(AstmFaults(drop_bytes_in_frame=3))
    w.run()
    assert w.host_counts().keys() & {"bad_checksum", "malformed"}
    assert [m.raw for m in w.queued] == MESSAGES


def test_a_partial_frame_aborts_the_message_and_the_instrument_repeats_it_whole() -> None:
    w = wire(AstmFaults(partial_frame=2))
    w.run()
    assert w.device_counts()["ack_timeout"] == 1  # 15 s without a reply to the cut frame
    assert w.host_counts()["partial_frame"] == 1  # the EOT arrived inside it
    assert [m.raw for m in w.queued] == MESSAGES  # none lost, none twice


def test_silence_mid_message_times_out_and_the_message_is_repeated_later() -> None:
    w = wire(AstmFaults(stall_after_frame=2, stall_seconds=45.0))
    w.run()
    assert w.host_counts()["receive_timeout"] == 1
    assert w.device_counts()["ack_timeout"] == 1
    assert [m.raw for m in w.queued] == MESSAGES


def test_a_short_pause_mid_message_is_not_a_timeout() -> None:
    w = wire(AstmFaults(stall_after_frame=2, stall_seconds=25.0))
    w.run()
    assert "receive_timeout" not in w.host_counts()
    assert [m.raw for m in w.queued] == MESSAGES


def test_a_frame_flood_outside_a_transfer_is_noise() -> None:
    w = wire(AstmFaults(flood_frames=500))
    w.run()
    assert w.host_counts()["noise"] == 3
    assert [m.raw for m in w.queued] == MESSAGES


def test_a_flood_of_bad_frames_inside_a_transfer_is_naked_frame_by_frame() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    r.feed(bytes([ENQ]), 0.0)
    bad = build_frame(1, b"R|1|^^^pH|7.40\r", True)[:-4] + b"00\r\n"
    actions = r.feed(bad * 2000, 1.0)
    assert sends(actions) == bytes([NAK]) * 2000
    assert counters(actions).count("bad_checksum") == 2000
    # the line is still usable: the real message follows
    actions = r.feed(b"".join(frame_message(SMALL)), 2.0)
    assert [d.message.raw for d in delivers(actions)] == [SMALL]


def test_a_frame_longer_than_247_bytes_is_naked_without_being_kept() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    r.feed(bytes([ENQ]), 0.0)
    actions = r.feed(b"\x021" + b"x" * 100_000 + b"\x03" + b"00\r\n", 1.0)
    assert sends(actions) == bytes([NAK])
    assert counters(actions) == ["frame_too_long"]
    assert r._frame is None and len(r._message) == 0
    actions = r.feed(b"".join(frame_message(SMALL)), 2.0)
    assert [d.message.raw for d in delivers(actions)] == [SMALL]


def test_a_message_past_max_message_bytes_is_refused_and_the_next_one_delivered() -> None:
    big = encode_records(["H|\\^&", *[f"R|{i}|^^^pH|7.40" for i in range(200)], "L|1|N"])
    w = wire(messages=[big, SMALL], max_message_bytes=1024)
    w.run()
    assert w.host_counts()["message_too_long"] == 3  # once per attempt of the instrument
    assert w.sender.abandoned == [0]
    assert [m.raw for m in w.queued] == [SMALL]
    assert len(w.receiver._message) <= 1024


def test_a_wrong_frame_number_is_naked_and_a_repeated_frame_acked_and_ignored() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    f1, f2, f3, f4 = frame_message(SMALL)
    r.feed(bytes([ENQ]), 0.0)
    assert sends(r.feed(f2, 0.0)) == bytes([NAK])  # frame 2 where 1 was due
    assert sends(r.feed(f1, 0.0)) == bytes([ACK])
    actions = r.feed(f1, 0.0)  # our ACK was lost; the instrument sends frame 1 again
    assert sends(actions) == bytes([ACK])
    assert counters(actions) == ["duplicate_frame"]
    r.feed(f2 + f3, 0.0)
    (deliver,) = delivers(r.feed(f4, 0.0))
    assert deliver.message.raw == SMALL  # frame 1 counted once


def test_a_transfer_ended_by_eot_before_the_terminator_is_discarded_and_counted() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    frames = list(frame_message(SMALL))
    actions = r.feed(bytes([ENQ]) + b"".join(frames[:2]) + bytes([EOT]), 0.0)
    assert counters(actions) == ["incomplete_message"]
    assert delivers(actions) == []
    actions = r.feed(bytes([ENQ]) + b"".join(frames), 1.0)
    assert [d.message.raw for d in delivers(actions)] == [SMALL]


def test_no_frame_for_30_seconds_returns_the_receiver_to_neutral() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    frames = list(frame_message(SMALL))
    r.feed(bytes([ENQ]) + frames[0], 100.0)
    assert r.next_deadline() == 130.0
    assert r.poll(129.9) == []
    assert counters(r.poll(130.0)) == ["receive_timeout"]
    assert r.next_deadline() is None
    # neutral again: a frame without ENQ is noise, a new ENQ starts afresh
    assert counters(r.feed(frames[1], 131.0)) == ["noise"]
    actions = r.feed(bytes([ENQ]) + b"".join(frames), 132.0)
    assert [d.message.raw for d in delivers(actions)] == [SMALL]


def test_enq_while_a_message_is_still_being_queued_gets_a_busy_nak() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    actions = r.feed(bytes([ENQ]) + b"".join(frame_message(SMALL)), 0.0)
    (deliver,) = delivers(actions)
    # the instrument gave up waiting (EOT) and tries again before the queue answered
    assert counters(r.feed(bytes([EOT]), 16.0)) == ["sender_abort"]
    assert sends(r.feed(bytes([ENQ]), 17.0)) == bytes([NAK])
    late = r.committed(deliver.token, True, 18.0)
    assert sends(late) == b""  # nobody is waiting for that ACK any more
    assert counters(late) == ["late_commit"]
    assert sends(r.feed(bytes([ENQ]), 28.0)) == bytes([ACK])


def test_the_instrument_waits_ten_seconds_after_a_busy_nak() -> None:
    s = AstmSender(PROFILE, [SMALL])
    assert sends(s.poll(0.0)) == bytes([ENQ])
    assert counters(s.feed(bytes([NAK]), 1.0)) == ["busy"]
    assert s.next_deadline() == 11.0
    assert s.poll(10.9) == []
    assert sends(s.poll(11.0)) == bytes([ENQ])


def test_contention_the_instrument_yields_and_waits_before_its_next_enq() -> None:
    s = AstmSender(PROFILE, [SMALL])
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    assert sends(s.poll(0.0)) == bytes([ENQ])
    # the host's ENQ crossed ours on the line: the host has priority
    assert counters(s.feed(bytes([ENQ]), 0.1)) == ["contention"]
    assert s.next_deadline() == pytest.approx(0.1 + PROFILE.link.contention_wait)
    assert s.poll(20.0) == []
    w = Wire(s, r, now=20.0)
    w.run()
    assert w.to_host.startswith(bytes([ENQ]))
    assert w.now >= 20.1
    assert [m.raw for m in w.queued] == [SMALL]


def test_an_enq_from_the_host_while_the_instrument_is_idle_is_refused() -> None:
    s = AstmSender(PROFILE, [SMALL])
    s.poll(0.0)
    s.feed(bytes([ACK]), 0.0)
    s.feed(bytes([ACK]) * 4, 0.0)  # every frame acked: delivered, idle
    assert s.delivered == [0]
    assert sends(s.feed(bytes([ENQ]), 1.0)) == bytes([NAK])


def test_six_naks_of_one_frame_abort_the_message_with_eot() -> None:
    s = AstmSender(PROFILE, [SMALL])
    s.poll(0.0)
    first = s.feed(bytes([ACK]), 0.0)
    for _ in range(5):
        again = s.feed(bytes([NAK]), 0.0)
        assert sends(again) == sends(first)  # the same frame, retransmitted
    actions = s.feed(bytes([NAK]), 0.0)
    assert sends(actions) == bytes([EOT])
    assert "aborted" in counters(actions)
    assert s.next_deadline() == 10.0  # repeated whole, later


def test_no_reply_to_a_frame_within_15_seconds_aborts_with_eot() -> None:
    s = AstmSender(PROFILE, [SMALL])
    s.poll(0.0)
    s.feed(bytes([ACK]), 1.0)
    assert s.next_deadline() == 16.0
    actions = s.poll(16.0)
    assert sends(actions) == bytes([EOT])
    assert counters(actions) == ["ack_timeout"]


def test_an_eot_reply_counts_as_ack() -> None:
    s = AstmSender(PROFILE, [SMALL])
    s.poll(0.0)
    first = sends(s.feed(bytes([ACK]), 0.0))
    second = sends(s.feed(bytes([EOT]), 0.0))
    assert first[1:2] == b"1" and second[1:2] == b"2"


def test_two_patients_in_one_message_are_acked_when_both_are_queued() -> None:
    two = encode_records(
        ["H|\\^&", "P|1|PID-1", "R|1|^^^pH|7.40", "P|2|PID-2", "R|1|^^^pH|7.30", "L|1|N"]
    )
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    actions = r.feed(bytes([ENQ]) + b"".join(frame_message(two)), 0.0)
    first, second = delivers(actions)
    assert [first.message.identity.patient_id, second.message.identity.patient_id] == [
        "PID-1",
        "PID-2",
    ]
    assert sends(r.committed(first.token, True, 1.0)) == b""
    assert sends(r.committed(second.token, False, 1.0)) == bytes([NAK])
    actions = r.feed(list(frame_message(two))[-1], 2.0)  # the retransmitted final frame
    assert len(delivers(actions)) == 2
    tokens = [d.token for d in delivers(actions)]
    assert sends(r.committed(tokens[0], True, 3.0) + r.committed(tokens[1], True, 3.0)) == bytes(
        [ACK]
    )


def test_a_lost_port_forgets_the_partial_message() -> None:
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    frames = list(frame_message(SMALL))
    r.feed(bytes([ENQ]) + b"".join(frames[:2]) + frames[2][:5], 0.0)
    assert counters(r.reset()) == ["reset"]
    assert r.next_deadline() is None
    actions = r.feed(frames[3], 1.0)
    assert delivers(actions) == []
    actions = r.feed(bytes([ENQ]) + b"".join(frames), 2.0)
    assert [d.message.raw for d in delivers(actions)] == [SMALL]


def test_any_split_of_the_byte_stream_gives_the_same_messages() -> None:
    w = wire()
    w.run()
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    raws: list[bytes] = []
    for i in range(len(w.to_host)):
        for action in r.feed(bytes(w.to_host[i : i + 1]), 0.0):
            if isinstance(action, Deliver):
                raws.append(action.message.raw)
                r.committed(action.token, True, 0.0)
    assert raws == MESSAGES


def test_engines_refuse_a_profile_of_another_protocol() -> None:
    other = DeviceProfile.model_validate(
        {"name": "kv", "link": {"protocol": "line-kv"}}, strict=False
    )
    with pytest.raises(ValueError, match="astm-e1394"):
        AstmReceiver(other, "x", 1 << 20)
    with pytest.raises(ValueError, match="astm-e1394"):
        AstmSender(other, [SMALL])


def test_two_messages_in_one_transfer_are_delivered_one_after_the_other() -> None:
    other = encode_records(["H|\\^&|||T", "P|1|PID-8", "R|1|^^^pH|7.31", "L|1|N"])
    r = AstmReceiver(PROFILE, "bga", 1 << 20)
    frames = list(frame_message(SMALL + other))  # numbering runs on across both
    r.feed(bytes([ENQ]), 0.0)
    for frame in frames[:3]:
        r.feed(frame, 0.0)
    (first,) = delivers(r.feed(frames[3], 0.0))
    assert sends(r.committed(first.token, True, 0.0)) == bytes([ACK])
    for frame in frames[4:7]:
        assert sends(r.feed(frame, 0.0)) == bytes([ACK])
    (second,) = delivers(r.feed(frames[7], 0.0))
    assert [first.message.raw, second.message.raw] == [SMALL, other]
    assert second.message.sequence == first.message.sequence + 1
