"""The MWL benchmark's modality: who sends the queries, and how each query is timed.

A client runs one query as a modality does (associate, C-FIND, read every response, release)
against one server, and returns its timings (seconds, by measure) and the Accession Number of
every pending response. The first of a client's ``measures`` is the one the goal is judged on.

* ``pynetdicom``: a pynetdicom SCU in the bench process, TCP_NODELAY set. Measure
  ``association``: wall time around the whole association. It holds the client's own work too:
  pynetdicom's threads and pydicom decoding every response (about 35 ms of CPU for a 52-response
  query on the reference machine, more than the gateway spends answering it).
* ``findscu``: DCMTK ``findscu -W``, one process per query: a compiled DICOM stack, as a
  modality has. Measure ``in_process``: from findscu's own log time stamp of "Requesting
  Association" to the moment the bench sees the process exit, after A-RELEASE: everything the
  query costs, without starting a process and loading DCMTK's data dictionary (about 30 ms
  here, which a running modality pays once, not per query). Measure ``wall``: exec to exit.
  Both clocks are the system's real-time clock (log4cplus's ``%D`` and ``time.time()``). The
  answers are read from findscu's log (the dump of each response), so nothing is written to
  disk per query.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from bench.common import BenchError, dcmtk_env, require
from bench.mwl_data import Shape
from gateway.convert.uids import UidFactory
from gateway.forward.link import tune_socket
from gateway.worklist.client import MODALITY_WORKLIST_FIND

MODALITY_AE = "MODALITY"
NETWORK_TIMEOUT = 120.0
Timings = dict[str, float]  # measure -> seconds

# findscu's log, reduced to what is timed and checked: time stamps in seconds since the epoch
# with microseconds ("%s.%Q" prints "1795555124.918.967"), and only three kinds of line.
FINDSCU_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, out
log4cplus.appender.out = log4cplus::ConsoleAppender
log4cplus.appender.out.layout = log4cplus::PatternLayout
log4cplus.appender.out.layout.ConversionPattern = %D{%s.%Q} %m%n
log4cplus.appender.out.filters.1 = log4cplus::spi::StringMatchFilter
log4cplus.appender.out.filters.1.StringToMatch = Requesting Association
log4cplus.appender.out.filters.1.AcceptOnMatch = true
log4cplus.appender.out.filters.2 = log4cplus::spi::StringMatchFilter
log4cplus.appender.out.filters.2.StringToMatch = (0008,0050)
log4cplus.appender.out.filters.2.AcceptOnMatch = true
log4cplus.appender.out.filters.3 = log4cplus::spi::StringMatchFilter
log4cplus.appender.out.filters.3.StringToMatch = Final Find Response
log4cplus.appender.out.filters.3.AcceptOnMatch = true
log4cplus.appender.out.filters.4 = log4cplus::spi::DenyAllFilter
"""
_STAMP = re.compile(rb"^(\d+)\.(\d{3}\.\d{3}) (.*)$")
_ACCESSION = re.compile(rb"\(0008,0050\) SH \[([^\]]*)\]")  # a request's is "(no value ...)"


class Peer(Protocol):
    """A server as the clients see it."""

    name: str
    called_ae: str
    port: int


class Client(Protocol):
    """One way of being the modality."""

    name: str
    measures: tuple[str, ...]

    def find(self, server: Peer, shape: Shape) -> tuple[Timings, list[str]]:
        """One query: its timings and the accession numbers answered."""
        ...


def _on_open(event: Any) -> None:
    # As the gateway's own SCU and the DCMTK peers (TCP_NODELAY=1) do: without it a query
    # waits for delayed ACKs, about 40 ms whoever answers.
    tune_socket(event.assoc.dul.socket.socket, NETWORK_TIMEOUT)


def find_once(ae: AE, server: Peer, query: Dataset) -> tuple[float, list[Dataset]]:
    """Associate, C-FIND, read every response, release; seconds and the identifiers."""
    started = time.perf_counter()
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title=server.called_ae,
        evt_handlers=[(evt.EVT_CONN_OPEN, _on_open)],
    )
    if not assoc.is_established:
        raise BenchError(f"{server.name}: association not established")
    found: list[Dataset] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(query, MODALITY_WORKLIST_FIND):
            code = int(status.Status) if status is not None and "Status" in status else None
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            else:
                final = code
    finally:
        assoc.release()
    seconds = time.perf_counter() - started
    if final != 0x0000:
        raise BenchError(f"{server.name}: C-FIND ended with status {final}")
    return seconds, found


def accessions(found: Sequence[Dataset]) -> list[str]:
    """Accession numbers of the responses (decoded outside the timed part)."""
    return [str(ds.get("AccessionNumber", "")).strip() for ds in found]


class PynetdicomClient:
    """A pynetdicom SCU in this process."""

    name: str = "pynetdicom"
    measures: tuple[str, ...] = ("association",)

    def __init__(self) -> None:
        self.ae = AE(ae_title=MODALITY_AE)
        self.ae.add_requested_context(MODALITY_WORKLIST_FIND, [ExplicitVRLittleEndian])
        self.ae.acse_timeout = self.ae.dimse_timeout = NETWORK_TIMEOUT
        self.ae.network_timeout = NETWORK_TIMEOUT

    def find(self, server: Peer, shape: Shape) -> tuple[Timings, list[str]]:
        """One association; timed around all of it."""
        seconds, found = find_once(self.ae, server, shape.query)
        return {"association": seconds}, accessions(found)


@dataclass
class FindscuClient:
    """DCMTK ``findscu -W``, one process per query, timed from its own log."""

    work: Path
    program: str = field(default_factory=lambda: require("findscu"))
    name: str = "findscu"
    measures: tuple[str, ...] = ("in_process", "wall")
    _queries: dict[str, Path] = field(default_factory=dict)

    def _log_config(self) -> Path:
        path = self.work / "findscu-log.cfg"
        if not path.exists():
            self.work.mkdir(parents=True, exist_ok=True)
            path.write_text(FINDSCU_LOG_CONFIG, "ascii")
        return path

    def _query_file(self, shape: Shape) -> Path:
        path = self._queries.get(shape.name)
        if path is None:
            path = self.work / f"query-{shape.name}.dcm"
            out = Dataset()
            out.update(shape.query)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
            meta.MediaStorageSOPInstanceUID = UID(UidFactory(None).derive("bench-mwl", shape.name))
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            out.file_meta = meta
            self.work.mkdir(parents=True, exist_ok=True)
            out.save_as(path, enforce_file_format=True)
            self._queries[shape.name] = path
        return path

    def find(self, server: Peer, shape: Shape) -> tuple[Timings, list[str]]:
        """One ``findscu`` process: one association, one C-FIND, release."""
        args = [self.program, "-W", "-lc", str(self._log_config()), "-aet", MODALITY_AE]
        args += ["-aec", server.called_ae, "-to", str(int(NETWORK_TIMEOUT))]
        args += ["127.0.0.1", str(server.port), str(self._query_file(shape))]
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, env=dcmtk_env(), check=False)
        ended_wall, ended = time.time(), time.perf_counter()
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            tail = output.decode(errors="replace")[-500:]
            raise BenchError(f"{server.name}: findscu exited with {proc.returncode}: {tail}")
        requested, final, found = parse_findscu_log(output)
        if requested is None:
            raise BenchError(f"{server.name}: no 'Requesting Association' in findscu's log")
        if not final:
            raise BenchError(f"{server.name}: the C-FIND did not end with a Success response")
        timings = {"in_process": ended_wall - requested, "wall": ended - started}
        return timings, found


def parse_findscu_log(output: bytes) -> tuple[float | None, bool, list[str]]:
    """From findscu's reduced log: when it asked for the association (seconds since the epoch),
    whether the final response said Success, and each pending response's accession number."""
    requested: float | None = None
    final = False
    found: list[str] = []
    for line in output.splitlines():
        stamped = _STAMP.match(line)
        message = stamped.group(3) if stamped else line
        if stamped and message.startswith(b"Requesting Association"):
            requested = int(stamped.group(1)) + float(stamped.group(2)) / 1000
        elif b"Final Find Response" in message:
            final = b"(Success)" in message
        else:
            accession = _ACCESSION.search(message)
            if accession is not None:
                found.append(accession.group(1).decode("ascii", "replace").strip())
    return requested, final, found
