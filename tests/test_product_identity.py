"""Every association and every file we write names the product (gateway.product), not pynetdicom.

Asserted where a PACS administrator sees it: DCMTK storescp's and wlmscpfs's debug log of our
A-ASSOCIATE-RQ (a real forward, a real worklist query), DCMTK echoscu's debug log of our
listener's A-ASSOCIATE-AC, and the File Meta of converted and received objects.
"""

from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path

import pytest

from gateway import __version__, product
from gateway.clock import FakeClock
from gateway.config import WorklistSection
from gateway.convert.uids import is_valid_uid
from gateway.forward.echo import echo
from gateway.forward.sender import StoreSender
from gateway.listener.server import DicomListener
from gateway.worklist.client import WorklistClient
from tests.forward.conftest import make_destination
from tests.forward.objects import entry_for, write_ct
from tests.listener.support import LISTENER_AE, echoscu, listener_settings
from tests.peers import StoreSCP
from tests.worklist.factory import mwl_dataset
from tests.worklist.wlmfiles import WlmScp

PYNETDICOM_UID = "1.2.826.0.1.3680043.9.3811"


def _theirs(log: str) -> tuple[str, str]:
    """The requestor's or acceptor's identity as DCMTK's -d dump of the association shows it."""
    uid = re.findall(r"Their Implementation Class UID:\s+(\S+)", log)
    name = re.findall(r"Their Implementation Version Name:\s+(\S+)", log)
    assert uid and name, log
    return uid[-1], name[-1]


def test_the_product_identity_is_fixed_and_valid() -> None:
    assert is_valid_uid(product.IMPLEMENTATION_CLASS_UID)
    assert product.IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert not product.IMPLEMENTATION_CLASS_UID.startswith(PYNETDICOM_UID)
    assert f"EDGEGW_{__version__}" == product.IMPLEMENTATION_VERSION_NAME


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ("0.1.0", "EDGEGW_0.1.0"),
        ("10.20.300", "EDGEGW_10.20.300"),  # exactly 16
        ("1.2.3+g1234abcd", "EDGEGW_1.2.3"),  # local part dropped first
        ("1.2.3.dev45678", "EDGEGW_1.2.3.dev"),  # then cut at SH's 16
    ],
)
def test_version_name_fits_sh(version: str, name: str) -> None:
    assert product.version_name(version) == name
    assert len(product.version_name(version)) <= 16


@pytest.mark.peers
def test_a_forward_announces_the_product_to_the_pacs(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", extra_args=["-d"]).start()
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    try:
        outcome = sender.send(entry_for(write_ct(tmp_path / "ct.dcm")))
    finally:
        sender.close()
    assert outcome.status == 0, outcome
    assert _theirs(peer.log()) == (
        product.IMPLEMENTATION_CLASS_UID,
        product.IMPLEMENTATION_VERSION_NAME,
    )


@pytest.mark.peers
def test_an_echo_announces_the_product(tmp_path: Path, storescp_factory: type[StoreSCP]) -> None:
    peer = storescp_factory(tmp_path / "pacs", extra_args=["-d"]).start()
    report = echo(make_destination(peer.port), "EDGE_GW", None)
    assert report.ok, report.reason
    assert _theirs(peer.log()) == (
        product.IMPLEMENTATION_CLASS_UID,
        product.IMPLEMENTATION_VERSION_NAME,
    )


@pytest.mark.peers
def test_a_worklist_query_announces_the_product(tmp_path: Path) -> None:
    ris = WlmScp(tmp_path / "wlm", extra_args=["-d"])
    ris.add(mwl_dataset(start_date=f"{datetime.date.today():%Y%m%d}"))
    settings = WorklistSection.model_validate(
        {
            "ae_title": "RIS",
            "host": "127.0.0.1",
            "port": ris.port,
            "modality": "US",
            "scheduled_station_ae_title": "EDGE_GW",
        }
    )
    with ris:
        WorklistClient(settings, "EDGE_GW", None).query(mwl_dataset())
        log = ris.log()
    assert _theirs(log) == (product.IMPLEMENTATION_CLASS_UID, product.IMPLEMENTATION_VERSION_NAME)


@pytest.mark.peers
def test_the_listener_answers_as_the_product() -> None:
    listener = DicomListener(
        listener_settings(), LISTENER_AE, None, [], logging.getLogger("test.listener")
    )
    listener.start()
    try:
        result = echoscu(listener.address[1], extra=["-d"])
    finally:
        listener.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert _theirs(result.stdout + result.stderr) == (
        product.IMPLEMENTATION_CLASS_UID,
        product.IMPLEMENTATION_VERSION_NAME,
    )
