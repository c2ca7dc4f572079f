"""The gateway's MWL handler behind a plain pynetdicom SCP, and DCMTK findscu as the modality."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from gateway.worklist.client import MODALITY_WORKLIST_FIND
from gateway.worklist.mwl import MwlService
from tests.peers import free_port, require_tool


class MwlScp:
    """A pynetdicom AE answering MWL C-FIND with ``service.handle_find`` on a loopback port."""

    def __init__(self, service: MwlService, ae_title: str = "EDGE_GW") -> None:
        self.service = service
        self.ae_title = ae_title
        self.port = free_port()
        self._server: Any = None

    def start(self) -> MwlScp:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(
            MODALITY_WORKLIST_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_FIND, self.service.handle_find)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def findscu(
    port: int,
    keys: Sequence[str | bytes],
    out_dir: Path,
    *,
    called: str = "EDGE_GW",
    extra: Sequence[str] = (),
) -> tuple[list[Dataset], str]:
    """Run ``findscu -W`` with ``-k`` keys; the extracted responses and what findscu printed.

    findscu puts a key's bytes into the query as given: pass bytes in the encoding the query's
    Specific Character Set declares (a str is sent as UTF-8).
    """
    binary = require_tool("findscu")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    args = [
        binary,
        "-W",
        "-aet",
        "MODALITY",
        "-aec",
        called,
        "-to",
        "20",
        "-X",
        "-od",
        str(out_dir),
    ]
    for key in keys:
        args += ["-k", key]
    args += [*extra, "127.0.0.1", str(port)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"findscu exited {proc.returncode}: {output}")
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))], output
