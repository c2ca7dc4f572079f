"""MWL benchmark: the gateway's MWL SCP answering from its cache against DCMTK wlmscpfs.

    python -m bench.mwl [--items 10000] [--queries 200] [--client pynetdicom|findscu]
                        [--out results.json] [--small]

One deterministic worklist of ``--items`` scheduled procedure steps (dates over today ±3 days,
several modalities and station AE titles, Latin-1, UTF-8 and ISO 2022 Japanese names) is
written twice, neither copy timed: as one ``.wl`` file per step for ``wlmscpfs``, and into a
WorklistCache for the gateway. The gateway runs in a child process, as the daemon would: the
cache, an MwlService with no RIS client (an RIS outage: every answer comes from the cache) and
the hardened DicomListener on loopback, plain TCP, as wlmscpfs is.

This process is the modality. Per query shape, every query is one association (associate,
C-FIND, read every response, release), timed around all of it, with the same client for both
servers: ``--client pynetdicom`` (default) a pynetdicom SCU in this process with TCP_NODELAY (as
the gateway's own SCU and the DCMTK peers have it); ``--client findscu`` DCMTK's ``findscu -W -X``
run once per query (a compiled DICOM stack, as a modality has), timed as the process's wall
time, and also net of process start-up: each round also times one ``findscu --version``, and
the net figures subtract the median of those from the raw ones.
The servers alternate (A B, B A, ...) so drift in the machine's load hits both alike. One
untimed warm-up query per server comes first. Each answer's set of accession numbers must equal
the set computed from the generated items, for both servers, else the run fails. Reported per
server: median and p95 latency, and server CPU per query (utime+stime of its process from
/proc, which on a shared machine says more than wall time).

Shapes: ``station`` is what a modality asks at the start of a day (today, its modality, its
station AE title, the usual return keys); ``name`` is an operator's search (patient name
``M*``, today, the modality's own); ``patient`` a scanned wristband (one Patient ID, no date).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from bench.common import (
    BenchError,
    dcmtk_env,
    free_port,
    machine,
    machine_line,
    require,
    run_in_work_dir,
    wait_for_port,
)
from gateway.clock import SystemClock
from gateway.config import DicomListenerSection
from gateway.convert.uids import UidFactory
from gateway.forward.link import tune_socket
from gateway.listener.server import DicomListener
from gateway.listener.services import ListenerService
from gateway.logsetup import setup_logging
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND
from gateway.worklist.item import WorklistItem
from gateway.worklist.mwl import MwlService

REPO = Path(__file__).resolve().parents[1]
SEED = 20240105
GATEWAY_AE, RIS_AE, MODALITY_AE = "EDGE_GW", "RIS", "MODALITY"
# The cache would expire steps of past days; the bench compares like with like, so none expire.
GRACE_HOURS = 24.0 * 8
QUERY_CHARSET = "ISO_IR 100"  # what a European modality declares
SERVERS = ("gateway", "wlmscpfs")
CLIENTS = ("pynetdicom", "findscu")
NETWORK_TIMEOUT = 120.0

# (family name, character set of the worklist file it goes into); None: plain ASCII, no set.
FAMILIES: tuple[tuple[str, str | list[str] | None], ...] = (
    ("Smith", None),
    ("Jones", None),
    ("Martin", None),
    ("Meyer", None),
    ("Moreau", None),
    ("Mancini", None),
    ("Brown", None),
    ("Garcia", None),
    ("Rossi", None),
    ("Nowak", None),
    ("Wilson", None),
    ("Dubois", None),
    ("Schmidt", None),
    ("Fischer", None),
    ("Weber", None),
    ("Bianchi", None),
    ("Taylor", None),
    ("Andersen", None),
    ("Müller", "ISO_IR 100"),
    ("Ménard", "ISO_IR 100"),
    ("Jørgensen", "ISO_IR 100"),
    ("Groß", "ISO_IR 100"),
    ("Łukasiewicz", "ISO_IR 192"),
    ("Παπαδόπουλος", "ISO_IR 192"),
)
GIVEN = ("Anna", "Jean", "Maria", "Peter", "Zoë", "José", "Li", "Sven", "Chloé", "Omar")
JAPANESE: tuple[str, str | list[str] | None] = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    ["", "ISO 2022 IR 87"],
)
MODALITIES = {
    "US": ("Abdomen", "Thyroid", "Carotid"),
    "CT": ("Head", "Chest", "Abdomen"),
    "MR": ("Knee", "Brain", "Spine"),
    "CR": ("Chest PA", "Hand"),
    "DX": ("Chest", "Pelvis"),
    "XA": ("Coronary",),
}
STATIONS_PER_MODALITY = 4


@dataclass(frozen=True)
class Step:
    """One generated worklist item: its dataset and the file character set it is written in."""

    dataset: Dataset
    charset: str | list[str] | None
    accession: str
    family: str
    date: str
    modality: str
    station: str


def generate(count: int, today: datetime.date) -> list[Step]:
    """``count`` steps, the same for the same ``count`` and day."""
    rng = random.Random(SEED)
    uids = UidFactory(None)
    patients: list[tuple[str, str, str | list[str] | None, str, str]] = []
    for number in range(max(1, count * 2 // 3)):  # some patients have several steps
        if rng.random() < 0.01:
            name, charset = JAPANESE
            family = "Yamada"
        else:
            family, charset = rng.choice(FAMILIES)
            name = f"{family}^{rng.choice(GIVEN)}"
            if charset is None and not name.isascii():
                charset = "ISO_IR 100"  # a given name with an accent
        born = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(32000))
        patients.append((f"P{number:07d}", name, charset, family, f"{born:%Y%m%d}"))
    steps = []
    for index in range(count):
        pid, name, charset, family, birth = rng.choice(patients)
        modality = rng.choice(sorted(MODALITIES))
        station = f"{modality}_ROOM{rng.randint(1, STATIONS_PER_MODALITY)}"
        date = f"{today + datetime.timedelta(days=rng.randint(-3, 3)):%Y%m%d}"
        accession = f"ACC{index:07d}"
        ds = Dataset()
        ds.PatientName = name
        ds.PatientID = pid
        ds.IssuerOfPatientID = "HOSP"
        ds.PatientBirthDate = birth
        ds.PatientSex = rng.choice("MF")
        ds.AccessionNumber = accession
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyInstanceUID = uids.derive("bench-mwl", "study", str(index))
        ds.RequestedProcedureID = f"RP{index:07d}"
        ds.RequestedProcedureDescription = f"{modality} {rng.choice(MODALITIES[modality])}"
        step = Dataset()
        step.ScheduledStationAETitle = station
        step.ScheduledProcedureStepStartDate = date
        step.ScheduledProcedureStepStartTime = (
            f"{rng.randint(7, 18):02d}{rng.randrange(0, 60, 15):02d}00"
        )
        step.Modality = modality
        step.ScheduledPerformingPhysicianName = "Perf^Doctor"
        step.ScheduledProcedureStepDescription = ds.RequestedProcedureDescription
        step.ScheduledProcedureStepID = f"SPS{index:07d}"
        ds.ScheduledProcedureStepSequence = DicomSequence([step])
        steps.append(Step(ds, charset, accession, family, date, modality, station))
    return steps


def write_wl_files(steps: Sequence[Step], folder: Path) -> None:
    """One DICOM worklist file per step, text encoded in the step's character set."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()  # wlmscpfs refuses an AE title folder without it
    for step in steps:
        out = Dataset()
        out.update(step.dataset)
        if step.charset is not None:
            out.SpecificCharacterSet = step.charset
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
        meta.MediaStorageSOPInstanceUID = step.dataset.StudyInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.file_meta = meta
        out.save_as(folder / f"{step.accession}.wl", enforce_file_format=True)


def fill_cache(steps: Sequence[Step], path: Path) -> None:
    """Make the steps the whole content of a WorklistCache database at ``path``."""
    cache = WorklistCache(path, SystemClock(), GRACE_HOURS)
    cache.open()
    try:
        cache.replace([WorklistItem.from_dataset(s.dataset) for s in steps], time.time())
    finally:
        cache.close()


# -- query shapes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A query the modality sends, and which generated steps it must find."""

    name: str
    description: str
    query: Dataset
    expected: frozenset[str]  # accession numbers


def _query(name: str, date: str, modality: str, station: str, patient_id: str = "") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = QUERY_CHARSET
    for keyword in (
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
    ):
        setattr(ds, keyword, "")
    ds.PatientName = name
    ds.PatientID = patient_id
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = ""
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def shapes(steps: Sequence[Step], today: datetime.date) -> list[Shape]:
    """The query shapes, with the accession numbers each must return."""
    date = f"{today:%Y%m%d}"
    modality, station = "US", "US_ROOM1"
    by_station = frozenset(
        s.accession
        for s in steps
        if s.date == date and s.modality == modality and s.station == station
    )
    # Every generated family name starts with a capital letter, so "M*" means the same
    # to a case-sensitive matcher (wlmscpfs) and a case-insensitive one (the gateway, for PN).
    by_name = frozenset(
        s.accession
        for s in steps
        if s.date == date and s.modality == modality and s.family[0] == "M"
    )
    # A scanned wristband: one patient, no date, so no index helps the gateway here.
    patient = str(min(steps, key=lambda s: s.accession).dataset.PatientID)
    by_patient = frozenset(s.accession for s in steps if s.dataset.PatientID == patient)
    keys = "10 keys and 7 in the step sequence"
    return [
        Shape(
            "station",
            f"date {date}, modality {modality}, station {station}; {keys}",
            _query("", date, modality, station),
            by_station,
        ),
        Shape(
            "name",
            f'patient name "M*", date {date}, modality {modality}; {keys}',
            _query("M*", date, modality, ""),
            by_name,
        ),
        Shape(
            "patient",
            f"patient ID {patient}, any date, modality or station; {keys}",
            _query("", "", "", "", patient),
            by_patient,
        ),
    ]


# -- the servers -------------------------------------------------------------------------------


def serve_main(spec: dict[str, Any]) -> int:
    """Child: the gateway's MWL SCP from the cache on ``spec['port']`` until stdin closes."""
    setup_logging("INFO", sys.stderr)  # the daemon logs every answered query; so does this
    cache = WorklistCache(Path(spec["cache"]), SystemClock(), GRACE_HOURS)
    cache.open()
    mwl = MwlService(cache, None, 1.0, logging.getLogger("gateway.mwl"))
    prepared = mwl.prepare()
    service = ListenerService(
        "mwl",
        (MODALITY_WORKLIST_FIND,),
        (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        ((evt.EVT_C_FIND, mwl.handle_find),),
    )
    settings = DicomListenerSection(bind="127.0.0.1", port=int(spec["port"]))
    listener = DicomListener(
        settings, GATEWAY_AE, None, [service], logging.getLogger("gateway.listener")
    )
    listener.start()
    try:
        print(json.dumps({"items": prepared}), flush=True)
        sys.stdin.read()  # the parent closes our stdin when it is done
    finally:
        listener.stop()
        cache.close()
    return 0


@dataclass
class Server:
    """A running SCP: name, port, process (for its CPU time), how to stop it."""

    name: str
    called_ae: str
    port: int
    proc: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """User+system CPU of the process and its waited-for children so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop and reap it."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def start_gateway(cache: Path, log: Path) -> Server:
    """The gateway child; returns once it listens."""
    port = free_port()
    spec = json.dumps({"cache": str(cache), "port": port})
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.mwl", "--serve", spec],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise BenchError(f"gateway child exited with {proc.returncode} (see {log})")
    wait_for_port(port, proc)
    return Server("gateway", GATEWAY_AE, port, proc)


def start_wlmscpfs(root: Path, log: Path) -> Server:
    """DCMTK wlmscpfs serving ``root/RIS/*.wl``, responses in each file's character set."""
    port = free_port()
    args = [require("wlmscpfs"), "-dfp", str(root), "-csk", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env())
    wait_for_port(port, proc)
    return Server("wlmscpfs", RIS_AE, port, proc)


# -- the modality ------------------------------------------------------------------------------

# One query: seconds, and the accession number of every pending response (decoded untimed).
Finder = Callable[["Server", "Shape"], tuple[float, list[str]]]


def _on_open(event: Any) -> None:
    # As the gateway's own SCU and the DCMTK peers (TCP_NODELAY=1) do: without it a query
    # waits for delayed ACKs, about 40 ms whoever answers.
    tune_socket(event.assoc.dul.socket.socket, NETWORK_TIMEOUT)


def find_once(ae: AE, server: Server, query: Dataset) -> tuple[float, list[Dataset]]:
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


def pynetdicom_finder() -> Finder:
    """The pynetdicom SCU in this process."""
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(MODALITY_WORKLIST_FIND, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT

    def find(server: Server, shape: Shape) -> tuple[float, list[str]]:
        seconds, found = find_once(ae, server, shape.query)
        return seconds, accessions(found)

    return find


@dataclass
class FindscuClient:
    """DCMTK ``findscu -W`` run once per query; responses extracted to files and read back."""

    work: Path
    program: str = field(default_factory=lambda: require("findscu"))
    _queries: dict[str, Path] = field(default_factory=dict)

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

    def find(self, server: Server, shape: Shape) -> tuple[float, list[str]]:
        """One ``findscu`` process: one association, one C-FIND, release; wall time."""
        query = self._query_file(shape)
        out = self.work / f"rsp-{server.name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        args = [self.program, "-W", "-aet", MODALITY_AE, "-aec", server.called_ae]
        args += ["-to", str(int(NETWORK_TIMEOUT)), "-X", "-od", str(out)]
        args += ["127.0.0.1", str(server.port), str(query)]
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, env=dcmtk_env(), check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace")[-500:]
            raise BenchError(f"{server.name}: findscu exited with {proc.returncode}: {tail}")
        found = [
            str(dcmread(path).get("AccessionNumber", "")).strip()
            for path in sorted(out.glob("rsp*.dcm"))
        ]
        return seconds, found

    def startup(self) -> float:
        """Wall time of ``findscu --version``: process start-up with no DICOM work."""
        started = time.perf_counter()
        subprocess.run(
            [self.program, "--version"], capture_output=True, env=dcmtk_env(), check=True
        )
        return time.perf_counter() - started


def _quantiles(ms: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    p95 = (
        statistics.quantiles(ordered, n=20, method="inclusive")[18]
        if len(ordered) > 1
        else ordered[0]
    )
    return statistics.median(ordered), p95


def _stats(seconds: Sequence[float], cpu: float, startup_ms: float | None) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    median, p95 = _quantiles(ms)
    stats = {
        "queries": len(ms),
        "median_ms": round(median, 2),
        "p95_ms": round(p95, 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
        "server_cpu_ms_per_query": round(cpu * 1000 / len(ms), 2),
    }
    if startup_ms is not None:
        stats["net_median_ms"] = round(median - startup_ms, 2)
        stats["net_p95_ms"] = round(p95 - startup_ms, 2)
    return stats


def bench_shape(
    shape: Shape,
    servers: Sequence[Server],
    queries: int,
    find: Finder | None = None,
    startup: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Alternate the servers ``queries`` times each; every answer is checked.

    ``find`` is the client (default: pynetdicom); with ``startup`` (seconds of one client
    process start-up) one start-up is timed per round and net figures are reported too.
    """
    if not shape.expected:
        raise BenchError(f"{shape.name}: no item matches; use more --items")
    find = find or pynetdicom_finder()

    def check(server: Server, found: list[str]) -> None:
        got = frozenset(found)
        if got != shape.expected or len(found) != len(shape.expected):
            raise BenchError(
                f"{shape.name}: {server.name} returned {len(found)} responses, "
                f"{len(got - shape.expected)} unexpected, {len(shape.expected - got)} missing"
            )

    for server in servers:  # warm-up, untimed
        check(server, find(server, shape)[1])
    seconds: dict[str, list[float]] = {s.name: [] for s in servers}
    startups: list[float] = []
    cpu: dict[str, float] = {}
    cpu_before = {s.name: s.cpu_seconds() for s in servers}
    for number in range(queries):
        order = servers if number % 2 == 0 else list(reversed(servers))
        for server in order:
            took, found = find(server, shape)
            check(server, found)
            seconds[server.name].append(took)
        if startup is not None:  # sampled in the same rounds, so under the same load
            startups.append(startup())
    for server in servers:
        cpu[server.name] = server.cpu_seconds() - cpu_before[server.name]
    extra: dict[str, Any] = {}
    startup_ms: float | None = None
    if startups:
        startup_ms, startup_p95 = _quantiles([s * 1000 for s in startups])
        extra["client_startup"] = {
            "runs": len(startups),
            "median_ms": round(startup_ms, 2),
            "p95_ms": round(startup_p95, 2),
        }
    result = {s.name: _stats(seconds[s.name], cpu[s.name], startup_ms) for s in servers}
    gateway, wlm = result["gateway"], result["wlmscpfs"]
    if startups:
        extra["goal_met_net"] = (
            gateway["net_p95_ms"] < 50.0 and gateway["net_p95_ms"] < wlm["net_p95_ms"]
        )
    return {
        "description": shape.description,
        "matches": len(shape.expected),
        **result,
        "gateway_over_wlmscpfs": {
            "median": round(gateway["median_ms"] / wlm["median_ms"], 3),
            "p95": round(gateway["p95_ms"] / wlm["p95_ms"], 3),
        },
        "goal_met": gateway["p95_ms"] < 50.0 and gateway["p95_ms"] < wlm["p95_ms"],
        **extra,
    }


# -- running and reporting ---------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate, load, serve, query, check; returns the results."""
    require("wlmscpfs")
    if args.client == "findscu":
        require("findscu")
    today = datetime.date.today()
    print(f"generating {args.items} worklist items ...", file=sys.stderr)
    steps = generate(args.items, today)
    write_wl_files(steps, work / "wlm" / RIS_AE)
    fill_cache(steps, work / "worklist.sqlite")
    load_before = os.getloadavg()
    servers = [
        start_gateway(work / "worklist.sqlite", work / "gateway.log"),
        start_wlmscpfs(work / "wlm", work / "wlmscpfs.log"),
    ]
    find: Finder
    startup: Callable[[], float] | None = None
    if args.client == "findscu":
        findscu = FindscuClient(work / "findscu")
        find, startup = findscu.find, findscu.startup
    else:
        find = pynetdicom_finder()
    try:
        results = {}
        for shape in shapes(steps, today):
            print(f"querying: {shape.name} ({len(shape.expected)} matches) ...", file=sys.stderr)
            results[shape.name] = bench_shape(shape, servers, args.queries, find, startup)
    finally:
        for server in servers:
            server.stop()
    return {
        "machine": machine(load_before, "wlmscpfs"),
        "setup": {
            "items": args.items,
            "queries_per_server": args.queries,
            "client": args.client,
            "client_detail": CLIENT_DETAIL[args.client],
            "gateway": "child process: WorklistCache + MwlService(client=None) + DicomListener",
            "wlmscpfs": "DCMTK wlmscpfs -csk, one .wl file per item, TCP_NODELAY=1",
            "transport": "plain TCP, loopback 127.0.0.1",
        },
        "shapes": results,
    }


CLIENT_DETAIL = {
    "pynetdicom": "pynetdicom SCU in the bench process, one association per query, "
    "timed from A-ASSOCIATE-RQ to A-RELEASE-RP, servers alternating",
    "findscu": "DCMTK findscu -W -X, one process and one association per query, timed as "
    "the process's wall time (raw) and minus the median wall time of findscu --version "
    "timed once per round (net), servers alternating",
}


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (with net columns for a findscu run)."""
    net = results["setup"]["client"] == "findscu"
    head = "| query | matches | server | median ms | p95 ms |"
    rule = "|---|---:|---|---:|---:|"
    if net:
        head += " net median ms | net p95 ms |"
        rule += "---:|---:|"
    rows = [head + " server CPU ms/query |", rule + "---:|"]
    for name, res in results["shapes"].items():
        for server in SERVERS:
            s = res[server]
            row = f"| {name} | {res['matches']} | {server} | {s['median_ms']:.1f} | "
            row += f"{s['p95_ms']:.1f} | "
            if net:
                row += f"{s['net_median_ms']:.1f} | {s['net_p95_ms']:.1f} | "
            rows.append(row + f"{s['server_cpu_ms_per_query']:.1f} |")
        ratio = res["gateway_over_wlmscpfs"]
        row = f"| {name} | | gateway/wlmscpfs | {ratio['median']:.3f} | {ratio['p95']:.3f} |"
        rows.append(row + (" | | |" if net else " |"))
        if net:
            up = res["client_startup"]
            rows.append(
                f"| {name} | | findscu --version (start-up) | {up['median_ms']:.1f} | "
                f"{up['p95_ms']:.1f} | | | |"
            )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line of ``python -m bench.mwl``."""
    parser = argparse.ArgumentParser(prog="python -m bench.mwl", description=__doc__)
    parser.add_argument("--items", type=int, default=10000, help="worklist items")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per server")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="pynetdicom",
        help="the modality: a pynetdicom SCU in this process, or one DCMTK findscu per query",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--work-dir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--small", action="store_true", help="quick run: 1000 items, 10 queries")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.small:
        args.items, args.queries = 1000, 10
    if min(args.items, args.queries) < 1:
        parser.error("--items and --queries must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.mwl``."""
    args = parse_args(argv)
    if args.serve:
        return serve_main(json.loads(args.serve))
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    results = run_in_work_dir("bench.mwl", args.work_dir, lambda work: run(args, work))
    if results is None:
        return 1
    print(format_table(results))
    print(
        f"\n{machine_line(results['machine'])}; {args.items} items, "
        f"{args.queries} queries per server and shape; client {args.client}"
    )
    for name, res in results["shapes"].items():
        verdict = "met" if res["goal_met"] else "MISSED"
        line = f"{name}: goal (gateway p95 < 50 ms and below wlmscpfs) {verdict}"
        if "goal_met_net" in res:
            line += f" raw, {'met' if res['goal_met_net'] else 'MISSED'} net of start-up"
        print(line)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
