"""A PACS that stops reading in the middle of an object does not hang the sender."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.forward.outcome import FailureClass, OutcomeKind
from gateway.forward.sender import StoreSender
from tests.forward.conftest import make_destination
from tests.forward.objects import entry_for, write_ct
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers


def test_pacs_that_stops_reading_mid_object_times_out(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    # storescp sleeps in its progress callback: it stops reading once the first PDUs are in.
    peer = storescp_factory(tmp_path / "pacs", extra_args=["--sleep-during", "30"]).start()
    big = write_ct(tmp_path / "big.dcm", rows=1024, cols=1024, frames=16)  # 32 MiB
    destination = make_destination(peer.port, network_timeout=1.0, dimse_timeout=2.0)
    sender = StoreSender(destination, "EDGE_GW", None, FakeClock())
    started = time.monotonic()
    outcome = sender.send(entry_for(big))
    elapsed = time.monotonic() - started
    sender.close()
    assert elapsed < 10.0, outcome  # a hang, not a slow machine, would fail this
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.TIMEOUT
    assert "stopped reading" in outcome.reason
