"""The real daemon against a PACS that is full or misconfigured for every object (issue 10 B12).

A backlog must ride such a condition out: nothing goes to ``failed``, the destination says why it
waits (systemd STATUS=), and once the PACS is fixed everything arrives with no operator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from tests.forward.scps import StatusSCP
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, free_port
from tests.test_daemon import drop, png_bytes, received_uids
from tests.test_daemon_hostile import gateway_cli

pytestmark = pytest.mark.peers

BACKLOG = 20

# A storescp profile that accepts only Verification: every storage context is refused.
ACCEPT_NOTHING = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[EchoOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed

[[Profiles]]
[AcceptNothing]
PresentationContexts = EchoOnly
"""


def drop_backlog(folder: Path, prefix: str) -> None:
    for i in range(BACKLOG):
        drop(folder, f"{prefix}_BACKLOG^TEST_{i:02d}.png", png_bytes(700 + i))
    assert wait_until(lambda: not any(folder.iterdir()), 60)


def queue_rows(config: Path, state: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        gateway_cli(config, "queue", "list", "--state", state, "--json")
    )
    return rows


def test_a_pacs_that_accepts_nothing_pauses_the_destination_until_it_is_fixed(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    port = free_port()
    profile = tmp_path / "accept-nothing.cfg"
    profile.write_text(ACCEPT_NOTHING, "ascii")
    broken = storescp_factory(
        tmp_path / "broken", port=port, extra_args=["-v", "-xf", str(profile), "AcceptNothing"]
    ).start()
    config = write_config(tmp_path, port)
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    drop_backlog(tmp_path / "drop", "N1")

    # A few associations refused (the first one storescp logs is the harness's port probe).
    assert wait_until(lambda: broken.log().count("Association Received") >= 4, 30), broken.log()
    assert queue_rows(config, "failed") == []
    assert "destination_paused" in gw.log()
    status = gw.wait_for_message("STATUS=", 40, contains="pacs paused")  # every 10 s
    assert "accepted none of the" in status, status
    assert len(queue_rows(config, "pending")) + len(queue_rows(config, "sending")) == BACKLOG

    broken.stop()  # the PACS administrator fixes the profile: the same port, a good config
    pacs = storescp_factory(tmp_path / "pacs", port=port).start()
    assert wait_until(lambda: len(received_uids(pacs)) == BACKLOG, 60), gw.log()[-3000:]
    assert queue_rows(config, "failed") == []
    assert "destination_recovered" in gw.log()
    assert gw.terminate() == 0


def test_out_of_resources_backs_off_the_destination_and_delivers_when_the_pacs_has_room(
    tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    pacs = StatusSCP([SecondaryCaptureImageStorage], status=0xA700).start()
    try:
        config = write_config(tmp_path, pacs.port)
        gw = GatewayProcess(config).start()
        gateways.append(gw)
        drop_backlog(tmp_path / "drop", "F1")

        assert wait_until(lambda: len(pacs.stored) >= 3, 30), gw.log()[-3000:]
        assert queue_rows(config, "failed") == []
        assert gw.wait_for_message("STATUS=", 40, contains="pacs out of resources")
        # The lane waits as a whole: far fewer C-STOREs than one per queued object per step.
        tried = len(pacs.stored)
        assert tried < BACKLOG, tried

        pacs.status = 0x0000  # the PACS has room again
        assert wait_until(lambda: len(set(pacs.stored)) == BACKLOG, 60), gw.log()[-3000:]
        assert queue_rows(config, "failed") == []
        assert len(queue_rows(config, "sent")) == BACKLOG
        assert gw.terminate() == 0
    finally:
        pacs.stop()


def test_a_pacs_that_does_not_know_our_ae_title_says_so_and_loses_nothing(
    tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    # Issue 11 item 15: an A-ASSOCIATE-RJ "calling AE title not recognised" was retried for ever
    # as "unreachable"; it is a configuration a person must fix, and STATUS= says which.
    pacs = StatusSCP([SecondaryCaptureImageStorage], require_calling_aet=["MODALITY_1"]).start()
    try:
        config = write_config(tmp_path, pacs.port)
        gw = GatewayProcess(config).start()
        gateways.append(gw)
        drop_backlog(tmp_path / "drop", "R1")

        status = gw.wait_for_message("STATUS=", 40, contains="pacs rejected")
        assert (
            "PACS rejected our AE title: calling AE title not recognised — "
            "ask the PACS administrator to add AE title EDGE_GW at 127.0.0.1"
        ) in status, status
        assert "destination_rejected" in gw.log()
        assert queue_rows(config, "failed") == []
        assert pacs.stored == []

        pacs.allow_calling(["MODALITY_1", "EDGE_GW"])  # the PACS administrator adds us
        assert wait_until(lambda: len(set(pacs.stored)) == BACKLOG, 60), gw.log()[-3000:]
        assert queue_rows(config, "failed") == []
        assert "destination_recovered" in gw.log()
        assert gw.terminate() == 0
    finally:
        pacs.stop()
