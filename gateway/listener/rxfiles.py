"""Where pynetdicom writes a received C-STORE data set: the spool's staging folder, not /tmp.

With ``_config.STORE_RECV_CHUNKED_DATASET`` pynetdicom 3.0.4 streams each received data set
to ``tempfile.NamedTemporaryFile(delete=False)`` in ``tempfile.gettempdir()``; on a Raspberry
Pi that is often a tmpfs (RAM), and it is another filesystem than the spool's, so custody
would cost a copy across filesystems. It has no per-AE setting for the folder, so this module
replaces the name ``NamedTemporaryFile`` in ``pynetdicom.dimse_messages`` (the only user)
with a factory that writes into our folder. pynetdicom deletes the file after the C-STORE
handler returns; a transfer cut off before that leaves its file behind, which ``release()``
removes when the association is over (and the spool's recovery at the next start otherwise).

A full or read-only staging folder must not kill pynetdicom's DUL thread, which writes the
file (the association would be aborted, and the modality told nothing): a write error is kept
on the file (``write_error``) and the rest of the data set discarded, so that the C-STORE
completes and the handler answers it 0xA700 Out of Resources. A file that cannot even be
created is made, empty and marked so, in the system's temporary folder (nothing is written
into it), since pynetdicom needs a name to hand over and delete.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from pynetdicom import _config, dimse_messages
from pynetdicom.association import Association

PREFIX = "rx-"


class ReceiveFiles:
    """Routes pynetdicom's received data sets into ``folder`` and cleans up after cut transfers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._by_assoc: dict[int, list[IO[Any]]] = {}
        self._guarded: dict[str, _GuardedFile] = {}  # by name, until the handler asks

    def install(self) -> None:
        """Turn on chunked receiving into our folder (process-wide in pynetdicom; idempotent)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _config.STORE_RECV_CHUNKED_DATASET = True
        factory: Callable[..., IO[Any]] = self._open
        dimse_messages.NamedTemporaryFile = factory  # type: ignore[attr-defined,assignment]

    def _open(self, *args: Any, **kwargs: Any) -> IO[Any]:
        kwargs.update(dir=self.folder, prefix=PREFIX, delete=False)
        try:
            raw: IO[Any] = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115
            error: OSError | None = None
        except OSError as exc:
            kwargs["dir"] = None
            raw = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115
            error = exc
        guarded = _GuardedFile(raw, error)
        with self._lock:
            self._guarded[guarded.name] = guarded
        handle = cast(IO[Any], guarded)
        # pynetdicom decodes P-DATA in the association's DUL thread, which knows its association.
        assoc = getattr(threading.current_thread(), "assoc", None)
        if assoc is not None:
            with self._lock:
                handles = self._by_assoc.setdefault(id(assoc), [])
                handles[:] = [h for h in handles if not h.closed]  # stored ones are done
                handles.append(handle)
        return handle

    def release(self, assoc: Association) -> None:
        """Remove what ``assoc`` left behind (a data set whose transfer was cut off)."""
        with self._lock:
            handles = self._by_assoc.pop(id(assoc), [])
            for handle in handles:
                self._guarded.pop(handle.name, None)
        for handle in handles:
            # pynetdicom closes and deletes a file whose C-STORE reached the handler; the
            # handle of a cut transfer is still open and its file still there.
            with contextlib.suppress(OSError):
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                Path(handle.name).unlink()

    def write_error(self, path: Path) -> OSError | None:
        """The error that cut the writing of the received data set ``path``, if one did."""
        with self._lock:
            guarded = self._guarded.pop(str(path), None)
        return None if guarded is None else guarded.error

    def pending(self) -> int:
        """Associations with received files still tracked (for tests and stats)."""
        with self._lock:
            return len(self._by_assoc)


class _GuardedFile:
    """The received data set's file as pynetdicom sees it: a write error is kept, not raised.

    pynetdicom uses ``name``, ``write``, ``file.flush()``, ``close()`` and truthiness.
    """

    def __init__(self, raw: IO[Any], error: OSError | None) -> None:
        self._raw = raw
        self.error = error
        self.name: str = str(raw.name)

    @property
    def file(self) -> _GuardedFile:
        return self

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return int(self._raw.write(data))
            except OSError as exc:
                self.error = exc
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._raw.flush()
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.close()
