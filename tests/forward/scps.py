"""Peers written in the tests: a pynetdicom storage SCP with a chosen status, a silent server."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from tests.harness import stop_process
from tests.peers import free_port, require_tool, wait_for_port


class StatusSCP:
    """A storage SCP answering every C-STORE with ``status``; counts what it sees."""

    def __init__(
        self,
        sop_classes: Sequence[str],
        *,
        status: int = 0x0000,
        syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        ae_title: str = "PACS",
        require_called_aet: bool = False,
        require_calling_aet: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.status = status
        self.established = 0
        self.released = 0
        self.requested: list[list[tuple[str, str]]] = []
        self.stored: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = require_called_aet
        # Read at each association: a test "fixes" the PACS by assigning the list again.
        ae.require_calling_aet = list(require_calling_aet)
        for sop in sop_classes:
            ae.add_supported_context(sop, list(syntaxes))
        self._ae = ae
        self._server: Any = None

    def allow_calling(self, ae_titles: Sequence[str]) -> None:
        """The PACS administrator adds AE titles (an empty list: any caller is accepted)."""
        self._ae.require_calling_aet = list(ae_titles)

    def _on_requested(self, event: Any) -> None:
        pairs = [
            (str(cx.abstract_syntax), str(ts))
            for cx in event.assoc.requestor.requested_contexts
            for ts in cx.transfer_syntax
        ]
        with self._lock:
            self.requested.append(pairs)

    def _on_established(self, event: Any) -> None:
        with self._lock:
            self.established += 1

    def _on_released(self, event: Any) -> None:
        with self._lock:
            self.released += 1

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def start(self) -> StatusSCP:
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_ESTABLISHED, self._on_established),
                (evt.EVT_RELEASED, self._on_released),
                (evt.EVT_C_STORE, self._on_store),
            ],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


DCMQRSCP_CONFIG = """\
NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 4
HostTable BEGIN
known = ({calling}, localhost, 0)
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
{called} {storage} RW (100, 64mb) known
AETable END
"""


class RestrictedArchive:
    """DCMTK's dcmqrscp as a PACS that knows one peer: ``calling`` from localhost, nobody else.

    Like many PACS it answers an unknown caller with "called AE title not recognised" (DCMTK's
    BadAEService), not with "calling AE title not recognised".
    """

    def __init__(self, root: Path, *, called: str = "PACS", calling: str = "OTHER_GW") -> None:
        self.binary = require_tool("dcmqrscp")
        self.port = free_port()
        storage = root / "archive"
        storage.mkdir(parents=True, exist_ok=True)
        self.config = root / "dcmqrscp.cfg"
        self.config.write_text(
            DCMQRSCP_CONFIG.format(port=self.port, calling=calling, called=called, storage=storage),
            "ascii",
        )
        self.log_path = root / f"dcmqrscp-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RestrictedArchive:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config), "--fork", "-v"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class SilentPeer:
    """Accepts TCP connections and never says a word: a stalled PACS."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def start(self) -> SilentPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._listener.close()
