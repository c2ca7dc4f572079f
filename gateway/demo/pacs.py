"""A small storage SCP for the demo: TLS on loopback, files named by arrival, never by a UID."""

from __future__ import annotations

import itertools
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt


class DemoPacs:
    """Accepts C-STORE of every storage SOP class and transfer syntax and writes each object."""

    def __init__(
        self,
        folder: Path,
        port: int,
        ssl_context: ssl.SSLContext | None,
        on_stored: Callable[[Path, Dataset], None] | None = None,
    ) -> None:
        self.folder = folder
        self.port = port
        self.ssl_context = ssl_context
        self.on_stored = on_stored  # told of each object written, before Success is answered
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.received = 0
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        with self._lock:
            n = next(self._counter)
        target = self.folder / f"{n:06d}.dcm"
        with target.open("wb") as fh:
            fh.write(event.encoded_dataset())
        with self._lock:
            self.received += 1
        if self.on_stored is not None:
            self.on_stored(target, event.dataset)
        return 0x0000

    def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # A demo run again on the same folder numbers on after the files already there.
        numbers = [int(p.stem) for p in self.folder.glob("*.dcm") if p.stem.isdigit()]
        self._counter = itertools.count(max(numbers, default=0) + 1)
        ae = AE(ae_title="DEMO_PACS")
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=self.ssl_context,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
