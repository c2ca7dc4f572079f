"""Forwarding benchmark: the gateway's sender against DCMTK storescu, same files, same storescp.

    python -m bench.forward [--count-small 300 --small-mb 0.5 --count-large 10 --large-mb 55]
                            [--repeat 3] [--out results.json] [--small]

For each workload the files are generated once (deterministic Secondary Capture, uncompressed
16-bit pixel data; 1 MB here = 1 MiB). One DCMTK ``storescp`` over TLS with a required client
certificate, writing every object to a folder, receives both senders. Each run:

* gateway: the files are queued in a fresh Spool (hard links, not timed); a child process
  (``--child``) opens the spool and runs a DeliveryLane with a StoreSender until every object is
  confirmed and the association released. Its time is measured inside the child, from the
  lane's start (before connecting) to the release; interpreter start-up and imports, which the
  daemon pays once, are left out (the process's wall time is in the JSON too).
* gateway-sender-only: the same child runs StoreSender.send over the files directly, without
  the spool, so the difference to "gateway" is what the queue's bookkeeping costs.
* DCMTK: ``storescu +tls -R`` sends the same files in one association; its time is the whole
  process's wall time.

Peak RSS is measured the same way for both (see bench.common.run_measured). After each run
every SOP Instance UID must have arrived at storescp, otherwise the benchmark fails. The order
of the senders rotates between runs; the table reports the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from bench.common import (
    MIB,
    BenchError,
    BenchPki,
    StoreSCPRunner,
    Workload,
    dcmtk_env,
    machine,
    machine_line,
    make_pki,
    make_workload,
    require,
    run_in_work_dir,
    run_measured,
)
from gateway.clock import SystemClock
from gateway.config import Destination
from gateway.convert.result import ConvertedObject
from gateway.forward.backoff import Backoff
from gateway.forward.lane import DeliveryLane
from gateway.forward.outcome import OutcomeKind
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context
from gateway.logsetup import setup_logging
from gateway.spool.entries import SpoolEntry
from gateway.spool.store import Spool

REPO = Path(__file__).resolve().parents[1]
DESTINATION = "bench"
CHILD_TIMEOUT = 1800.0
SENDERS = {"lane": "gateway", "sender": "gateway-sender-only", "storescu": "storescu"}
"""Child modes and the names the report gives them."""


# -- the gateway's side, in a child process ----------------------------------------------------


class _CountingQueue:
    """The spool as the lane sees it, counting outcomes so the child knows when it is done."""

    def __init__(self, spool: Spool, expected: int) -> None:
        self._spool = spool
        self._expected = expected
        self.sent = 0
        self.retries: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def claim_next(self, destination: str) -> SpoolEntry | None:
        return self._spool.claim_next(destination)

    def mark_sent(self, delivery_id: int) -> None:
        self._spool.mark_sent(delivery_id)
        self.sent += 1
        if self.sent >= self._expected:
            self.done.set()

    def mark_retry(
        self,
        delivery_id: int,
        failure_class: str,
        reason: str,
        next_attempt_at: float,
        status: int | None = None,
    ) -> None:
        self._spool.mark_retry(delivery_id, failure_class, reason, next_attempt_at, status)
        # A retry means the number would include a backoff: stop and report it.
        self.retries.append(f"{failure_class}: {reason}")
        self.done.set()

    def mark_failed(
        self, delivery_id: int, failure_class: str, reason: str, status: int | None = None
    ) -> None:
        self._spool.mark_failed(delivery_id, failure_class, reason, status)
        self.failures.append(f"{failure_class}: {reason}")
        self.done.set()

    def next_due(self, destination: str) -> float | None:
        return self._spool.next_due(destination)

    def wait_for_work(self, destination: str, timeout: float) -> None:
        self._spool.wait_for_work(destination, timeout)


def _vmhwm_self_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _destination(spec: dict[str, Any]) -> Destination:
    return Destination.model_validate(
        {
            "name": DESTINATION,
            "ae_title": "PACS",
            "host": "127.0.0.1",
            "port": spec["port"],
            "tls": {"ca": spec["ca"], "cert": spec["cert"], "key": spec["key"]},
        }
    )


def _child_lane(spec: dict[str, Any]) -> dict[str, Any]:
    """The gateway's path: claim from the spool, send, record (each delivery committed)."""
    clock = SystemClock()
    destination = _destination(spec)
    assert destination.tls is not None
    spool = Spool(Path(spec["state_dir"]), [DESTINATION], 1 << 50, clock)
    spool.open()
    queue = _CountingQueue(spool, int(spec["expected"]))
    sender = StoreSender(destination, "EDGE_GW", client_context(destination.tls), clock)
    lane = DeliveryLane(
        destination, queue, sender, Backoff(destination.retry), clock, logging.getLogger("lane")
    )
    stop = threading.Event()
    thread = threading.Thread(target=lane.run, args=(stop,), name="lane:bench")
    started = time.perf_counter()
    thread.start()
    finished = queue.done.wait(float(spec["timeout"]))
    stop.set()
    spool.wake_all()
    thread.join()  # the lane releases the association on its way out
    seconds = time.perf_counter() - started
    spool.close()
    return {
        "finished": finished,
        "sent": queue.sent,
        "retries": queue.retries,
        "failures": queue.failures,
        "seconds": seconds,
    }


def _child_sender(spec: dict[str, Any]) -> dict[str, Any]:
    """StoreSender alone over the same files, no queue: what the spool adds is the difference."""
    clock = SystemClock()
    destination = _destination(spec)
    assert destination.tls is not None
    entries = []
    for number, name in enumerate(spec["files"], start=1):
        path = Path(name)
        meta = read_file_meta_info(path)
        entries.append(
            SpoolEntry(
                delivery_id=number,
                object_id=number,
                destination=DESTINATION,
                path=path,
                sop_class_uid=str(meta.MediaStorageSOPClassUID),
                sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
                size=path.stat().st_size,
                attempts=0,
            )
        )
    sender = StoreSender(destination, "EDGE_GW", client_context(destination.tls), clock)
    log = logging.getLogger("sender")
    sent, failures = 0, []
    started = time.perf_counter()
    for entry in entries:
        outcome = sender.send(entry)
        if outcome.kind is OutcomeKind.DELIVERED:
            sent += 1
            log.info("delivered", extra={"sop_instance_uid": entry.sop_instance_uid})
        else:
            failures.append(f"{outcome.failure_class}: {outcome.reason}")
            break
    sender.close()
    seconds = time.perf_counter() - started
    finished = sent == len(entries)
    return {
        "finished": finished,
        "sent": sent,
        "retries": [],
        "failures": failures,
        "seconds": seconds,
    }


def child_main(spec: dict[str, Any]) -> int:
    """Deliver one workload to storescp in this process; print one JSON line."""
    # The daemon logs every delivery at INFO; so does the child, to stderr, to pay the same.
    setup_logging("INFO", sys.stderr)
    # Peak after the imports, before set-up and the first byte sent: the floor of the RSS.
    baseline = _vmhwm_self_kib()
    report = _child_lane(spec) if spec["mode"] == "lane" else _child_sender(spec)
    report["vmhwm_kib"] = _vmhwm_self_kib()
    report["vmhwm_before_send_kib"] = baseline
    print(json.dumps(report))
    return 0 if report["finished"] and report["sent"] == spec["expected"] else 1


def enqueue_workload(workload: Workload, state_dir: Path) -> None:
    """Queue every file of ``workload`` for one destination (durably, as intake would)."""
    spool = Spool(state_dir, [DESTINATION], 1 << 50, SystemClock())
    spool.open()
    try:
        for path in workload.files:
            ds = dcmread(path, stop_before_pixels=True)
            staged = spool.staging_path()
            try:
                os.link(path, staged)  # the spool removes its link once sent; the file stays
            except OSError:
                shutil.copyfile(path, staged)
            obj = ConvertedObject(
                path=staged,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                # Only the duplicate check reads it; hashing 550 MB would measure nothing.
                source_sha256=hashlib.sha256(path.name.encode()).hexdigest(),
                kind="dicom",
            )
            spool.enqueue(obj, "bench")
    finally:
        spool.close()


# -- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderRun:
    """One sender sending one workload once."""

    sender: str
    seconds: float  # transfer time (see the module docstring)
    process_seconds: float  # wall time of the whole child process
    peak_rss_kib: int | None
    rss_method: str
    objects: int
    total_bytes: int
    rss_after_imports_kib: int | None = None  # gateway children only


def run_gateway(
    workload: Workload, scp: StoreSCPRunner, pki: BenchPki, work: Path, mode: str
) -> SenderRun:
    """A child delivers the workload: through spool and DeliveryLane, or StoreSender alone."""
    state_dir = work / f"gateway-state-{workload.name}"
    if mode == "lane":
        enqueue_workload(workload, state_dir)
    spec = {
        "mode": mode,
        "files": [str(p) for p in workload.files] if mode == "sender" else [],
        "state_dir": str(state_dir),
        "port": scp.port,
        "ca": str(pki.ca),
        "cert": str(pki.sender.cert),
        "key": str(pki.sender.key),
        "expected": len(workload.files),
        "timeout": CHILD_TIMEOUT,
    }
    measured = run_measured(
        [sys.executable, "-m", "bench.forward", "--child", json.dumps(spec)],
        timeout=CHILD_TIMEOUT + 60,
        cwd=REPO,
    )
    lines = measured.stdout.strip().splitlines()
    if measured.returncode != 0 or not lines:
        raise BenchError(
            f"gateway sender failed ({measured.returncode}): {measured.stdout[-2000:]}\n"
            f"{measured.stderr[-3000:]}"
        )
    report = json.loads(lines[-1])
    if report["retries"] or report["failures"]:
        raise BenchError(f"{SENDERS[mode]} did not deliver cleanly: {report}")
    name = SENDERS[mode]
    scp.check_all_arrived(workload, name)
    shutil.rmtree(state_dir, ignore_errors=True)
    peak = measured.peak_rss_kib
    method = measured.rss_method
    if peak is None:
        peak, method = int(report["vmhwm_kib"]), "VmHWM read by the child at its end"
    return SenderRun(
        name,
        float(report["seconds"]),
        measured.seconds,
        peak,
        method,
        len(workload.files),
        workload.total_bytes,
        int(report["vmhwm_before_send_kib"]),
    )


def run_storescu(workload: Workload, scp: StoreSCPRunner, pki: BenchPki) -> SenderRun:
    """DCMTK storescu sending the same files over TLS in one association."""
    args = [require("storescu"), "-aet", "EDGE_GW", "-aec", "PACS", "-R"]
    args += ["+tls", str(pki.sender.key), str(pki.sender.cert), "-pw", "+cf", str(pki.ca)]
    args += ["127.0.0.1", str(scp.port), *map(str, workload.files)]
    measured = run_measured(args, timeout=CHILD_TIMEOUT, env=dcmtk_env())
    if measured.returncode != 0:
        raise BenchError(f"storescu failed ({measured.returncode}): {measured.stderr[-3000:]}")
    scp.check_all_arrived(workload, "storescu")
    return SenderRun(
        "storescu",
        measured.seconds,
        measured.seconds,
        measured.peak_rss_kib,
        measured.rss_method,
        len(workload.files),
        workload.total_bytes,
    )


def summarise(runs: list[SenderRun]) -> dict[str, Any]:
    """Median transfer time of one sender's runs, with its rates and the worst peak RSS."""
    seconds = statistics.median(r.seconds for r in runs)
    first = runs[0]
    peaks = [r.peak_rss_kib for r in runs if r.peak_rss_kib is not None]
    floors = [r.rss_after_imports_kib for r in runs if r.rss_after_imports_kib is not None]
    return {
        "runs": len(runs),
        "median_seconds": round(seconds, 3),
        "objects_per_s": round(first.objects / seconds, 2),
        "mib_per_s": round(first.total_bytes / MIB / seconds, 2),
        "peak_rss_mib": round(max(peaks) / 1024, 1) if peaks else None,
        "rss_after_imports_mib": round(max(floors) / 1024, 1) if floors else None,
        "rss_method": first.rss_method,
        "all_runs": [asdict(r) for r in runs],
    }


def bench_workload(
    workload: Workload, scp: StoreSCPRunner, pki: BenchPki, work: Path, repeat: int
) -> dict[str, Any]:
    """Run every sender ``repeat`` times, rotating which goes first."""
    modes = list(SENDERS)
    runs: dict[str, list[SenderRun]] = {mode: [] for mode in modes}
    for run in range(repeat):
        order = modes[run % len(modes) :] + modes[: run % len(modes)]
        for mode in order:
            if mode == "storescu":
                runs[mode].append(run_storescu(workload, scp, pki))
            else:
                runs[mode].append(run_gateway(workload, scp, pki, work, mode))
            print(
                f"  {workload.name} run {run + 1}/{repeat}: {SENDERS[mode]} done", file=sys.stderr
            )
    summaries = {SENDERS[mode]: summarise(runs[mode]) for mode in modes}
    gateway, dcmtk = summaries["gateway"], summaries["storescu"]
    ratios = {
        "objects_per_s": round(gateway["objects_per_s"] / dcmtk["objects_per_s"], 2),
        "peak_rss": (
            round(gateway["peak_rss_mib"] / dcmtk["peak_rss_mib"], 2)
            if gateway["peak_rss_mib"] and dcmtk["peak_rss_mib"]
            else None
        ),
    }
    return {
        "objects": len(workload.files),
        "mib_each": round(workload.total_bytes / len(workload.files) / MIB, 3),
        "total_mib": round(workload.total_bytes / MIB, 1),
        **summaries,
        "gateway_over_storescu": ratios,
    }


# -- report ------------------------------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    header = (
        "| workload | sender | objects/s | MiB/s | peak RSS MiB | median s |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    rows = [header]
    for name, res in results["workloads"].items():
        label = f"{res['objects']} x {res['mib_each']:g} MiB ({name})"
        for sender in SENDERS.values():
            s = res[sender]
            rows.append(
                f"| {label} | {sender} | {s['objects_per_s']:.1f} | {s['mib_per_s']:.1f} | "
                f"{s['peak_rss_mib']} | {s['median_seconds']:.2f} |"
            )
        ratio = res["gateway_over_storescu"]
        rows.append(
            f"| {label} | gateway/storescu | {ratio['objects_per_s']:.2f} | "
            f"{ratio['objects_per_s']:.2f} | {ratio['peak_rss']} | |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__)
    parser.add_argument("--count-small", type=int, default=300, help="small instances")
    parser.add_argument("--small-mb", type=float, default=0.5, help="MiB per small instance")
    parser.add_argument("--count-large", type=int, default=10, help="large instances")
    parser.add_argument("--large-mb", type=float, default=55.0, help="MiB per large instance")
    parser.add_argument("--repeat", type=int, default=3, help="runs per sender (median)")
    parser.add_argument(
        "--pacs-max-pdu",
        type=int,
        default=16384,
        help="storescp's maximum receive PDU, which both senders must respect (DCMTK default)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--work-dir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument(
        "--small", action="store_true", help="quick run: 20 x 0.05 MiB, 2 x 2 MiB, 1 run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.small:
        args.count_small, args.small_mb, args.count_large, args.large_mb = 20, 0.05, 2, 2.0
        args.repeat = 1
    if min(args.count_small, args.count_large, args.repeat) < 1:
        parser.error("counts and --repeat must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate, serve, send, verify; returns the results."""
    require("storescu")
    load_before = os.getloadavg()
    pki = make_pki(work / "pki")
    print("generating instances ...", file=sys.stderr)
    workloads = [
        make_workload(
            work / "files" / "small", "small", args.count_small, int(args.small_mb * MIB)
        ),
        make_workload(
            work / "files" / "large", "large", args.count_large, int(args.large_mb * MIB)
        ),
    ]
    scp = StoreSCPRunner(
        work / "received", pki, work / "storescp.log", max_pdu=args.pacs_max_pdu
    ).start()
    try:
        results = {
            workload.name: bench_workload(workload, scp, pki, work, args.repeat)
            for workload in workloads
        }
    finally:
        scp.stop()
    return {
        "machine": machine(load_before, "storescu"),
        "setup": {
            "transport": "TLS (mutual, test CA), loopback 127.0.0.1",
            "pacs": "DCMTK storescp +tls -rc, writing every object to a folder, TCP_NODELAY=1, "
            f"max PDU {args.pacs_max_pdu} bytes",
            "runs_per_sender": args.repeat,
            "statistic": "median transfer time; peak RSS is the largest of the runs",
        },
        "workloads": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.forward``."""
    args = parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    results = run_in_work_dir("bench.forward", args.work_dir, lambda work: run(args, work))
    if results is None:
        return 1
    print(format_table(results))
    print(
        f"\n{machine_line(results['machine'])}; "
        f"{args.repeat} run(s) per sender, median; peak RSS by "
        f"{results['workloads']['small']['gateway']['rss_method']}"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
