"""Shared pieces of the benchmarks: test PKI, deterministic instances, storescp, peak RSS.

Nothing here is timed; the benchmark modules decide what they measure.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from gateway.convert.uids import UidFactory
from gateway.pki import CertFiles, TestAuthority

MIB = 1 << 20
TIME_BINARY = "/usr/bin/time"
_MAXRSS_RE = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


class BenchError(RuntimeError):
    """The benchmark cannot give a trustworthy number (a peer failed, objects went missing)."""


def require(program: str) -> str:
    """Path of a program on PATH, or a BenchError naming the Debian package."""
    found = shutil.which(program)
    if not found:
        raise BenchError(f"{program} is not installed (Debian: apt-get install dcmtk)")
    return found


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BenchPki:
    """A CA generated at run time, with a certificate for the PACS and one for the sender."""

    ca: Path
    pacs: CertFiles
    sender: CertFiles


def make_pki(folder: Path) -> BenchPki:
    """Issue fresh test certificates into ``folder`` (never production keys)."""
    authority = TestAuthority(folder, name="Gateway Bench CA")
    return BenchPki(
        ca=authority.ca_file,
        pacs=authority.issue("pacs", "PACS"),
        sender=authority.issue("sender", "EDGE_GW"),
    )


# -- instances ---------------------------------------------------------------------------------


def _geometry(target_bytes: int) -> tuple[int, int]:
    """Rows and columns of a 16-bit image whose pixel data is about ``target_bytes``."""
    pixels = max(target_bytes // 2, 64)
    columns = 1 << max(3, round(math.log2(math.sqrt(pixels))))
    rows = max(1, round(pixels / columns))
    if rows > 0xFFFF:  # Rows is US
        raise ValueError(f"{target_bytes} bytes do not fit one 16-bit frame")
    return rows, columns


def write_instance(path: Path, index: int, target_bytes: int, workload: str) -> str:
    """Write one deterministic Secondary Capture file; returns its SOP Instance UID.

    Pixel data is uncompressed 16-bit noise from a seeded generator (the same every run), so
    the file size is about ``target_bytes`` and no sender can profit from compression.
    """
    uids = UidFactory(None)
    rows, columns = _geometry(target_bytes)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(uids.derive("bench", workload, "sop", str(index)))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(uids.derive("bench", "implementation"))
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uids.derive("bench", workload, "study")
    ds.SeriesInstanceUID = uids.derive("bench", workload, "series")
    ds.PatientName = "Bench^Synthetic"
    ds.PatientID = "BENCH-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate, ds.StudyTime = "20250101", "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng([index, target_bytes])
    ds.PixelData = rng.integers(0, 4096, rows * columns, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@dataclass(frozen=True)
class Workload:
    """A set of files generated once and sent by every sender."""

    name: str
    files: tuple[Path, ...]
    uids: frozenset[str]

    @property
    def total_bytes(self) -> int:
        """Bytes of all files together."""
        return sum(p.stat().st_size for p in self.files)


def make_workload(folder: Path, name: str, count: int, target_bytes: int) -> Workload:
    """Generate ``count`` instances of about ``target_bytes`` each into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    uids: set[str] = set()
    for index in range(count):
        path = folder / f"{name}-{index:05d}.dcm"
        uids.add(write_instance(path, index, target_bytes, name))
        files.append(path)
    return Workload(name, tuple(files), frozenset(uids))


# -- the PACS ----------------------------------------------------------------------------------


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK programs: Nagle's algorithm off, as the gateway's sockets have it.

    Debian's DCMTK 3.6.7 leaves Nagle on unless TCP_NODELAY=1 is set. It writes a PDU header
    and its body in two writes, so every C-STORE response then waits for the peer's delayed
    ACK (about 40 ms): 20 small objects took 1.8 s instead of 0.03 s, whoever sent them.
    """
    return dict(os.environ, TCP_NODELAY="1")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"peer exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class StoreSCPRunner:
    """DCMTK storescp over TLS (client certificate required) writing every object to a folder.

    It writes files rather than running with ``--ignore`` so that arrival can be checked by
    SOP Instance UID (its default file names are ``<modality>.<SOP Instance UID>``).
    """

    def __init__(
        self, output_dir: Path, pki: BenchPki, log_path: Path, max_pdu: int = 16384
    ) -> None:
        self.binary = require("storescp")
        self.max_pdu = max_pdu
        self.output_dir = output_dir
        self.pki = pki
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCPRunner:
        """Start and wait until it listens."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-aet", "PACS", "-od", str(self.output_dir), "-uf"]
        args += ["--max-pdu", str(self.max_pdu)]
        args += ["+tls", str(self.pki.pacs.key), str(self.pki.pacs.cert), "-pw"]
        args += ["+cf", str(self.pki.ca), "-rc", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env()
            )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        """Stop and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def received_uids(self) -> set[str]:
        """SOP Instance UIDs of the files written so far (from the file names)."""
        return {p.name.partition(".")[2] for p in self.output_dir.iterdir() if p.is_file()}

    def check_all_arrived(self, workload: Workload, sender: str) -> None:
        """Fail loudly unless every instance of ``workload`` was written; then empty the folder."""
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"storescp is not running after {sender} (see {self.log_path})")
        got = self.received_uids()
        missing = workload.uids - got
        if missing:
            raise BenchError(
                f"{sender}: {len(missing)} of {len(workload.uids)} objects did not arrive at "
                f"storescp (see {self.log_path})"
            )
        for path in self.output_dir.iterdir():
            path.unlink()


# -- peak RSS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A finished child: exit code, wall seconds, peak RSS (KiB) and how it was measured."""

    returncode: int
    seconds: float
    peak_rss_kib: int | None
    rss_method: str
    stdout: str
    stderr: str


def _vmhwm_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def run_measured(
    args: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Measured:
    """Run a child and measure its wall time and peak RSS the same way for every sender.

    With GNU time (``/usr/bin/time -v``) the peak is the child's ru_maxrss as time's own wait4
    reports it. Without it, /proc/<pid>/status VmHWM is sampled every 20 ms until exit, which
    can miss a peak reached in the last 20 ms. ``getrusage(RUSAGE_CHILDREN)`` is not used: Linux
    carries the parent's high-water mark into a child started by vfork+exec, so it would report
    this Python process's peak instead of the sender's.
    """
    use_time = Path(TIME_BINARY).exists()
    argv = [TIME_BINARY, "-v", *args] if use_time else list(args)
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak: int | None = None
    if use_time:
        stdout, stderr = proc.communicate(timeout=timeout)
    else:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            sample = _vmhwm_kib(proc.pid)
            if sample is not None:
                peak = max(peak or 0, sample)
            if time.monotonic() > deadline:
                proc.kill()
                break
            time.sleep(0.02)
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    method = "GNU time -v (ru_maxrss)" if use_time else "VmHWM sampled every 20 ms"
    if use_time:
        match = _MAXRSS_RE.search(stderr)
        peak = int(match.group(1)) if match else None
    return Measured(proc.returncode, seconds, peak, method, stdout, stderr)


def machine(load_before: tuple[float, float, float], dcmtk_program: str) -> dict[str, Any]:
    """Where and under what load the numbers were taken (other work moves them a lot)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run(
        [require(dcmtk_program), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "dcmtk": version[0].strip("$ ") if version else "unknown",
        "kernel": platform.release(),
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }


def machine_line(info: dict[str, Any]) -> str:
    """The machine as the first half of a report's closing line."""
    load = info["load_average_1_5_15"]
    return (
        f"{info['date']}; {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}; "
        f"{info['dcmtk']}; load average {load['before'][0]:.2f} before, "
        f"{load['after'][0]:.2f} after"
    )


def run_in_work_dir(
    name: str, work_dir: Path | None, run: Callable[[Path], dict[str, Any]]
) -> dict[str, Any] | None:
    """Run a bench in ``work_dir`` (kept) or a temporary folder (removed); None when it failed."""
    work = work_dir or Path(tempfile.mkdtemp(prefix=f"{name.replace('.', '-')}-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(work)
    except BenchError as exc:
        print(f"{name}: FAILED: {exc}", file=sys.stderr)
        return None
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
