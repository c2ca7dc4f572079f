"""DCMTK ``wlmscpfs`` as the RIS: worklist files written by the test, the SCP started and stopped.

Reusable by any test or benchmark::

    with WlmScp(tmp_path / "wlm", ae_title="RIS") as ris:
        ris.add(mwl_dataset(patient_name="Müller^Anna"), charset="ISO_IR 100")
        ...  # query 127.0.0.1:ris.port, called AE "RIS"
        ris.stop()  # an RIS outage; ris.start() brings it back on the same port

wlmscpfs reads the files in ``<root>/<AE title>/*.wl`` at every query, so files may be added or
removed while it runs. ``return_charset`` picks what it declares in responses: "keep" (the file's
Specific Character Set, DCMTK ``-csk``) or "none" (no Specific Character Set at all, ``-cs0``:
the bytes stay as written, which is how a RIS that declares nothing behaves).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.harness import stop_process
from tests.peers import free_port, require_tool, wait_for_port

ReturnCharset = Literal["keep", "none"]
_CHARSET_FLAGS = {"keep": "-csk", "none": "-cs0"}


def write_worklist_file(path: Path, ds: Dataset, charset: str | Sequence[str] | None) -> Path:
    """Write ``ds`` as a DICOM worklist file, its text encoded in ``charset`` (None: as is)."""
    out = Dataset()
    out.update(ds)
    if charset is not None:
        out.SpecificCharacterSet = charset
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save_as(path, enforce_file_format=True)
    return path


class WlmScp:
    """A DCMTK wlmscpfs worklist SCP on a loopback port, serving files from ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        ae_title: str = "RIS",
        port: int | None = None,
        return_charset: ReturnCharset = "keep",
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.binary = require_tool("wlmscpfs")
        self.root = root
        self.ae_title = ae_title
        self.port = port or free_port()
        self.return_charset = return_charset
        self.extra_args = list(extra_args)
        self.log_path = log_path or root.parent / f"wlmscpfs-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        # wlmscpfs refuses to serve an AE title folder without this file.
        (self.folder / "lockfile").touch()
        self._count = 0

    @property
    def folder(self) -> Path:
        """The folder holding this AE title's .wl files."""
        return self.root / self.ae_title

    def add(
        self, ds: Dataset, charset: str | Sequence[str] | None = None, name: str | None = None
    ) -> Path:
        """Write one worklist file; returns its path."""
        self._count += 1
        filename = f"{name or f'item{self._count:06d}'}.wl"
        return write_worklist_file(self.folder / filename, ds, charset)

    def add_many(
        self, datasets: Iterable[Dataset], charset: str | Sequence[str] | None = None
    ) -> list[Path]:
        """Write several worklist files."""
        return [self.add(ds, charset) for ds in datasets]

    def clear(self) -> None:
        """Remove every worklist file (the RIS now has an empty worklist)."""
        for path in self.folder.glob("*.wl"):
            path.unlink()

    def start(self) -> WlmScp:
        """Start and wait until it accepts connections."""
        args = [
            self.binary,
            "-dfp",
            str(self.root),
            _CHARSET_FLAGS[self.return_charset],
            *self.extra_args,
            str(self.port),
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """Stop it (an RIS outage) and reap the process; harmless when not running."""
        stop_process(self.proc)
        self.proc = None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """What wlmscpfs printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> WlmScp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
