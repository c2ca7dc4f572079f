"""Convert one file in a fresh interpreter and print how much its resident memory grew.

Run by test_memory_bounds as ``python -m tests.convert.memprobe SOURCE WORKDIR``; prints one
JSON object: {"reason": <ConversionError reason or null>, "growth_kib": <growth>}, where growth
is the peak resident size minus the resident size just before converting.
Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.result import ConversionError
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.worklist.binding import Binding
from tests.convert.conftest import make_settings


def main() -> None:
    source, workdir = Path(sys.argv[1]), Path(sys.argv[2])
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(workdir / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    converter = Converter(settings, grouper, uids)
    item = RawItem(
        path=source,
        source="probe",
        size=source.stat().st_size,
        mtime=source.stat().st_mtime,
        binding=Binding.from_identity(PatientIdentity(patient_id="P1")),
    )
    baseline = _status_kib("VmRSS")
    reason = None
    try:
        converter.convert(item, workdir / "out.dcm")
    except ConversionError as exc:
        reason = exc.reason
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the parent, so
    # a large pytest process would show up as this probe's peak.
    growth = _status_kib("VmHWM") - baseline
    grouper.close()
    print(json.dumps({"reason": reason, "growth_kib": growth}))


def _status_kib(field: str) -> int:
    # The baseline is the current size (VmRSS), not the peak: growth then counts everything
    # conversion adds above what is in use.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
