"""Serial ingest through the real daemon: simulator -> socat pty pair -> gateway -> storescp.

The gateway runs as `dicom-gateway run` in a subprocess; the simulator plays onto the other end
of a socat pseudo-terminal pair in this process. Every object the PACS receives must pass
dciodvfy with zero errors and carry the patient the device sent.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pydicom
import pytest
import serial
from PIL import Image

from gateway.config import load_config
from gateway.convert.grouping import StudyGrouper
from gateway.convert.serialconv import SerialConverter
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.serial.astm_link import AstmReceiver
from gateway.ingest.serial.engine import Deliver
from gateway.ingest.serial.profile import DeviceProfile
from gateway.ingest.serial.profiles import load_profile
from gateway.simulate.faults import parse_injections
from gateway.simulate.player import DeviceSimulator, PlayReport
from gateway.simulate.socat import PtyPair
from gateway.worklist.binding import DETAIL_MARK, Binding
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, dciodvfy, free_port, require_tool
from tests.worklist.factory import mwl_dataset
from tests.worklist.wlmfiles import WlmScp

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LOST = "serial port lost; reopening with backoff"
SERIAL = """
[[ingest.serial]]
name = "{name}"
port = "{port}"
profile = "{profile}"
reopen_max_seconds = 1
max_message_bytes = 65536
"""


def quick_profile(root: Path, name: str, **settings: float) -> Path:
    """A built-in profile with shorter timeouts, so error cases take seconds, not minutes."""
    text = resources.files("gateway").joinpath("profiles", f"{name}.toml").read_text("utf-8")
    for key, value in settings.items():
        text, n = re.subn(rf"^{key}\s*=\s*[0-9.]+", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    path = root / f"{name}-quick.toml"
    path.write_text(text, "utf-8")
    return path


def patient_ids(profile: DeviceProfile, messages: list[str]) -> list[str]:
    """The patient ID each simulator message carries (as the device means it)."""
    out = []
    for text in messages:
        if profile.link.protocol == "astm-e1394":
            line = next(x for x in text.splitlines() if x.startswith("P|"))
            out.append(line.split("|")[2])
        else:
            pattern = profile.link.patient_id_pattern
            assert pattern is not None
            match = re.search(pattern, text, re.M)
            assert match is not None
            out.append(match["patient_id"])
    return out


def astm_variants(profile: DeviceProfile, count: int) -> list[str]:
    """``count`` distinct ASTM messages (distinct bytes, so none is a duplicate of another)."""
    base = profile.simulator.messages[0]
    return [base.replace("PID-1001", f"PID-9{i:03d}") for i in range(1, count + 1)]


def linekv_variants(profile: DeviceProfile, count: int) -> list[str]:
    base = profile.simulator.messages[0]
    return [base.replace("PID-2001", f"PID-8{i:03d}") for i in range(1, count + 1)]


def received_patients(pacs: StoreSCP) -> dict[str, int]:
    """PatientID -> number of objects the PACS holds for it."""
    out: dict[str, int] = {}
    for path in pacs.received():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        out[str(ds.PatientID)] = out.get(str(ds.PatientID), 0) + 1
    return out


def assert_conformant(pacs: StoreSCP) -> None:
    for path in pacs.received():
        errors, _warnings = dciodvfy(path)
        assert errors == [], (path.name, errors)


def log_events(gw: GatewayProcess, name: str) -> list[dict[str, object]]:
    out = []
    for line in gw.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            out.append(record)
    return out


def play(
    profile: DeviceProfile,
    line: serial.Serial,
    messages: list[str] | None = None,
    faults: str = "",
    **kw: float,
) -> PlayReport:
    return DeviceSimulator(
        profile,
        line,
        messages=messages,
        injections=parse_injections(faults),
        retry_wait=kw.get("retry_wait", 0.5),
    ).run()


class Bench:
    """Pty pairs, a storescp and a gateway for one test; everything stopped at the end."""

    def __init__(self, root: Path) -> None:
        require_tool("socat")
        self.root = root
        self.pairs: dict[str, PtyPair] = {}
        self.lines: dict[str, serial.Serial] = {}
        self.pacs = StoreSCP(root / "pacs", port=free_port())
        self.gateway: GatewayProcess | None = None

    def pair(self, name: str) -> PtyPair:
        pair = PtyPair(self.root / f"{name}-gw", self.root / f"{name}-dev")
        self.pairs[name] = pair.start()
        return pair

    def device(self, name: str) -> serial.Serial:
        """The device's end of the pair, kept open (socat ends when a pty end is closed)."""
        if name not in self.lines:
            self.lines[name] = serial.Serial(str(self.pairs[name].b), timeout=0.1)
        return self.lines[name]

    def unplug(self, name: str) -> None:
        self.pairs[name].stop()
        line = self.lines.pop(name, None)
        if line is not None:
            line.close()

    def start_gateway(
        self, serial_lines: list[tuple[str, str]], gateway_extra: str = "", tail: str = ""
    ) -> GatewayProcess:
        config = write_config(self.root, self.pacs.port, gateway_extra=gateway_extra)
        text = config.read_text("utf-8")
        for name, profile in serial_lines:
            text += SERIAL.format(name=name, port=self.pairs[name].a, profile=profile)
        text += tail
        config.write_text(text, "utf-8")
        gw = self.gateway = GatewayProcess(config).start()
        # pyserial's open discards what is already buffered: a device that speaks before the
        # gateway has its port open is talking to nobody, on a real line as on a pty.
        names = {name for name, _profile in serial_lines}

        def opened() -> bool:
            return names <= {e.get("source") for e in log_events(gw, "serial port open")}

        assert wait_until(opened, 20), gw.log()[-3000:]
        return gw

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.pacs.stop()
        for line in self.lines.values():
            line.close()
        for pair in self.pairs.values():
            pair.stop()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    yield b
    b.stop()


def test_each_builtin_profile_reaches_the_pacs_conformant_with_its_patient(bench: Bench) -> None:
    root = bench.root
    bench.pacs.start()
    lines = [
        ("astm-e1394", "astm-e1394"),
        ("line-kv", str(quick_profile(root, "line-kv", idle_timeout=2.0))),
        ("print-capture", str(quick_profile(root, "print-capture", idle_timeout=2.0))),
    ]
    for name, _profile in lines:
        bench.pair(name)
    gw = bench.start_gateway(lines)
    expected: set[str] = set()
    reports: dict[str, PlayReport] = {}
    threads = []
    for name, profile_ref in lines:
        profile = load_profile(profile_ref)
        expected |= set(patient_ids(profile, profile.simulator.messages))

        def run(profile: DeviceProfile = profile, name: str = name) -> None:
            reports[name] = play(profile, bench.device(name))

        threads.append(threading.Thread(target=run))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert reports["astm-e1394"].abandoned == 0
    assert wait_until(lambda: set(received_patients(bench.pacs)) >= expected, 60), (
        received_patients(bench.pacs),
        gw.log()[-4000:],
    )
    assert set(received_patients(bench.pacs)) == expected
    kinds = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in bench.pacs.received()
    }
    assert "1.2.840.10008.5.1.4.1.1.88.33" in kinds  # Comprehensive SR (measurements)
    assert "1.2.840.10008.5.1.4.1.1.104.1" in kinds  # Encapsulated PDF (print job)
    assert_conformant(bench.pacs)
    assert gw.terminate() == 0


def test_astm_line_faults_are_refused_as_the_protocol_says_and_every_message_arrives(
    bench: Bench,
) -> None:
    root = bench.root
    bench.pacs.start()
    bench.pair("bga")
    path = quick_profile(root, "astm-e1394", frame_ack_timeout=2.0, receive_timeout=3.0)
    gw = bench.start_gateway([("bga", str(path))])
    profile = load_profile(str(path))
    messages = astm_variants(profile, 6)
    report = play(
        profile,
        bench.device("bga"),
        messages,
        # a bad checksum twice, noise, a partial frame, a device silent mid-message, a flood
        "bad-checksum:2@1,noise:40@2,partial@3,silence:5@4,flood:3000@5",
    )
    assert (report.delivered, report.abandoned) == (6, 0)
    expected = set(patient_ids(profile, messages))
    assert wait_until(lambda: set(received_patients(bench.pacs)) == expected, 60), gw.log()[-4000:]
    assert all(n == 1 for n in received_patients(bench.pacs).values())  # nothing twice
    counters = {e["counter"] for e in log_events(gw, "serial line event")}
    assert {"noise", "partial_frame", "receive_timeout"} <= counters, counters
    assert "bad_checksum" in counters, counters
    assert_conformant(bench.pacs)
    assert gw.terminate() == 0


def test_linekv_noise_flood_wrong_baud_and_silence_leave_good_reports_delivered(
    bench: Bench,
) -> None:
    root = bench.root
    bench.pacs.start()
    bench.pair("vitals")
    path = quick_profile(root, "line-kv", idle_timeout=2.0)
    gw = bench.start_gateway([("vitals", str(path))])
    profile = load_profile(str(path))
    messages = linekv_variants(profile, 6)
    play(
        profile,
        bench.device("vitals"),
        messages,
        "noise@2,flood:100000@3,wrong-baud@4,silence:1@5",
    )
    ids = patient_ids(profile, messages)
    good = {ids[0], ids[1], ids[2], ids[4], ids[5]}  # the one sent at the wrong rate is garbage
    assert wait_until(lambda: set(received_patients(bench.pacs)) >= good, 60), gw.log()[-4000:]
    assert ids[3] not in received_patients(bench.pacs)
    assert log_events(gw, "serial line event")
    assert_conformant(bench.pacs)
    assert gw.terminate() == 0


def png_bytes() -> bytes:
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_unplugged_adapter_is_reopened_while_the_rest_of_the_gateway_works(bench: Bench) -> None:
    root = bench.root
    bench.pacs.start()
    pair = bench.pair("vitals")
    path = quick_profile(root, "line-kv", idle_timeout=2.0)
    gw = bench.start_gateway([("vitals", str(path))])
    profile = load_profile(str(path))
    first, second = linekv_variants(profile, 2)
    play(profile, bench.device("vitals"), [first])
    assert wait_until(lambda: "PID-8001" in received_patients(bench.pacs), 30), gw.log()[-3000:]

    bench.unplug("vitals")  # the USB adapter is pulled out
    assert wait_until(lambda: log_events(gw, LOST), 15), gw.log()[-3000:]
    (root / "drop" / "P777_FOLDER^STILL_1.png").write_bytes(png_bytes())
    assert wait_until(lambda: "P777" in received_patients(bench.pacs), 30), gw.log()[-3000:]

    pair.start()  # plugged back in: the same name, a new pty behind it
    assert wait_until(lambda: log_events(gw, "serial port back"), 15), gw.log()[-3000:]
    play(profile, bench.device("vitals"), [second])
    assert wait_until(lambda: "PID-8002" in received_patients(bench.pacs), 30), gw.log()[-3000:]
    assert len(log_events(gw, LOST)) == 1  # the transition, not every attempt
    assert gw.terminate() == 0


def object_size(config: Path, profile: DeviceProfile, text: str, tmp: Path) -> int:
    """What the gateway will write for ``text``, converted here the same way."""
    cfg = load_config(config)
    settings = ConvertSettings.from_config(cfg)
    uids = UidFactory(cfg.gateway.uid_root)
    grouper = StudyGrouper(tmp / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    try:
        engine = AstmReceiver(profile, "bga", 1 << 20)
        from gateway.ingest.serial.astm_frames import frame_message
        from gateway.ingest.serial.astm_records import encode_records

        data = b"\x05" + b"".join(frame_message(encode_records(text.splitlines())))
        delivered = [a for a in engine.feed(data, 1_700_000_000.0) if isinstance(a, Deliver)]
        message = delivered[0].message
        binding = Binding.from_identity(
            PatientIdentity(message.identity.patient_id, message.identity.patient_name)
        )
        counter = iter(range(100))
        objects = SerialConverter(settings, grouper, uids, profile).convert(
            message, binding, lambda: tmp / f"probe-{next(counter)}.dcm"
        )
        return sum(o.path.stat().st_size for o in objects)
    finally:
        grouper.close()


def test_message_is_acked_only_once_queued_queue_full_naks_then_room_delivers(
    bench: Bench, tmp_path: Path
) -> None:
    root = bench.root
    bench.pair("bga")
    path = quick_profile(root, "astm-e1394", frame_ack_timeout=2.0, receive_timeout=3.0)
    profile = load_profile(str(path))
    first, second = astm_variants(profile, 2)
    probe = tmp_path / "probe"
    probe.mkdir()
    config = write_config(root, bench.pacs.port)
    size = object_size(config, profile, first, probe)
    # Room for the first message's object, not for a second one while the PACS is away.
    gw = bench.start_gateway(
        [("bga", str(path))], gateway_extra=f"max_queue_bytes = {size + size // 2}"
    )
    report: dict[str, PlayReport] = {}
    device = threading.Thread(
        target=lambda: report.update(
            r=play(profile, bench.device("bga"), [first, second], retry_wait=3.0)
        )
    )
    device.start()
    assert wait_until(lambda: log_events(gw, "queue full: device messages refused"), 60), gw.log()[
        -4000:
    ]
    # Logged by the same thread just after "queue full": wait for it rather than race it.
    refused = "message not queued; device will be refused"
    assert wait_until(lambda: log_events(gw, refused), 10)  # NAKed: the device retransmits
    bench.pacs.start()  # the PACS is back: the first object leaves, the queue has room again
    device.join(120)
    assert (report["r"].delivered, report["r"].abandoned) == (2, 0)
    assert wait_until(lambda: set(received_patients(bench.pacs)) == {"PID-9001", "PID-9002"}, 60), (
        gw.log()[-4000:]
    )
    assert log_events(gw, "queue has room: device messages taken again")
    assert_conformant(bench.pacs)
    assert gw.terminate() == 0


def jane_ris(root: Path) -> WlmScp:
    """A wlmscpfs RIS (not started) with one step: Jane Doe, PID-2001, accession ACC-7001."""
    today = datetime.date.today().strftime("%Y%m%d")
    ris = WlmScp(root / "ris")
    ris.add(
        mwl_dataset(
            patient_name="Doe^Jane",
            patient_id="PID-2001",
            accession_number="ACC-7001",
            study_instance_uid="1.2.826.0.1.3680043.10.1.7001",
            step_id="SPS7001",
            start_date=today,
        ),
        "ISO_IR 100",
    )
    return ris


def worklist_section(ris: WlmScp, extra: str = "") -> str:
    return f"""
[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = {ris.port}
refresh_seconds = 5
connect_timeout = 2
{extra}"""


@contextlib.contextmanager
def on_jane_worklist(
    bench: Bench, extra: str = ""
) -> Iterator[tuple[GatewayProcess, DeviceProfile]]:
    """The PACS up and a line-kv "vitals" port whose gateway reads a RIS with Jane's step
    (``extra``: more [worklist] keys); yields once the worklist is read, stops the RIS after."""
    ris = jane_ris(bench.root)
    ris.start()
    try:
        bench.pacs.start()
        bench.pair("vitals")
        path = quick_profile(bench.root, "line-kv", idle_timeout=2.0)
        gw = bench.start_gateway([("vitals", str(path))], tail=worklist_section(ris, extra))
        profile = load_profile(str(path))
        assert wait_until(lambda: worklist_ready(gw), 30), gw.log()[-3000:]
        yield gw, profile
    finally:
        ris.stop()


def test_serial_report_binds_to_the_worklist_step_its_accession_names(bench: Bench) -> None:
    with on_jane_worklist(bench) as (gw, profile):
        play(profile, bench.device("vitals"), profile.simulator.messages[:2])
        assert wait_until(lambda: "PID-2001" in received_patients(bench.pacs), 30), gw.log()[-3000:]
        [path_sr] = [
            p
            for p in bench.pacs.received()
            if pydicom.dcmread(p, stop_before_pixels=True).PatientID == "PID-2001"
        ]
        ds = pydicom.dcmread(path_sr)
        assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.10.1.7001"
        assert ds.AccessionNumber == "ACC-7001"
        assert str(ds.PatientName) == "Doe^Jane"
        assert_conformant(bench.pacs)
        # PID-2002 has no scheduled step: held for reconciliation, not sent.
        assert "PID-2002" not in received_patients(bench.pacs)
        assert wait_until(lambda: held_count(gw) == 1, 20), gw.log()[-3000:]
        assert gw.terminate() == 0


def test_serial_report_naming_two_patients_is_held(bench: Bench) -> None:
    """Issue 10 A3: Jane's accession with another patient's ID is held, even without
    require_match (which lets a report no step names go on with the device's identity)."""
    with on_jane_worklist(bench, "require_match = false\n") as (gw, profile):
        jane = profile.simulator.messages[0]
        assert "PATIENT ID: PID-2001" in jane and "ACCESSION: ACC-7001" in jane
        wrong = jane.replace("PATIENT ID: PID-2001", "PATIENT ID: PID-2002")
        play(profile, bench.device("vitals"), [wrong, jane])
        assert wait_until(lambda: "PID-2001" in received_patients(bench.pacs), 30), gw.log()[-3000:]
        assert wait_until(lambda: held_count(gw) >= 1, 20), gw.log()[-3000:]
        assert "PID-2002" not in received_patients(bench.pacs)
        reasons = {str(row["held_reason"]) for row in held_rows(gw) or []}
        assert reasons == {
            "conflict: the device message's accession number is scheduled for another patient"
            + DETAIL_MARK
            + "accession number ACC-7001 is scheduled for patient ID PID-2001;"
            " the device message says patient ID PID-2002, who has no scheduled step"
        }
        held_logs = [e for e in log_events(gw, "queued") if e.get("held")]
        assert held_logs and all("PID-" not in str(e["held"]) for e in held_logs), held_logs
        assert gw.terminate() == 0


def worklist_ready(gw: GatewayProcess) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "worklist", "list", "--json", "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.returncode == 0 and "ACC-7001" in out.stdout


def held_rows(gw: GatewayProcess) -> list[dict[str, object]] | None:
    """The rows of `held list --json`; None when the command failed."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "held", "list", "--json", "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout)
    rows: list[dict[str, object]] = (
        data if isinstance(data, list) else data.get("items", data.get("objects", []))
    )
    return rows


def held_count(gw: GatewayProcess) -> int:
    rows = held_rows(gw)
    return -1 if rows is None else len(rows)
