"""Runs the whole gateway on embedded defaults against a demo PACS, with sample files fed in."""

from __future__ import annotations

import shlex
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.demo.console import DemoConsole, delivery_line, kept_lines, stop_hint
from gateway.demo.pacs import DemoPacs
from gateway.demo.samples import write_samples
from gateway.demo.serialdev import DemoSerialDevice
from gateway.invocation import Invocation, command, path_hint, this_invocation
from gateway.notify import SystemdNotifier
from gateway.pki import TestAuthority
from gateway.spool.entries import DeliveryState
from gateway.web.auth.setup import read_token
from gateway.web.tlscert import cert_paths

PANEL_WAIT_SECONDS = 10.0  # the panel makes its token when it starts, just after the spool

CONFIG_TEMPLATE = """\
# Written by `dicom-gateway demo`. The demo again on this folder:  {command} demo --dir {root}
# The gateway alone on this file (without the demo's PACS and serial device, so deliveries
# wait and retry, and the serial port is logged as missing):
#   {command} run --config {config}
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"
institution_name = "Demo Hospital"
station_name = "DEMO-ROOM"
study_window_minutes = 30

[modality]
modality = "US"
manufacturer = "Acme"
model_name = "Sono 3000"

[[ingest.folder]]
name = "export"
path = "drop"
filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'
settle_seconds = 0.5
poll_seconds = 1.0

[[destination]]
name = "demo-pacs"
ae_title = "DEMO_PACS"
host = "127.0.0.1"
port = {port}
idle_release_seconds = 2
[destination.tls]
ca = "tls/ca.pem"
cert = "tls/gateway.pem"
key = "tls/gateway.key"
verify_hostname = true
[destination.retry]
initial_seconds = 1
max_seconds = 10

[web]
# The panel only on this machine in the demo; a real box listens on the room's network.
bind = "127.0.0.1"
port = {web_port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_context(authority: TestAuthority, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(authority.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def run_demo(
    stop: threading.Event,
    *,
    duration: float | None,
    workdir: Path | None,
    invocation: Invocation | None = None,
) -> int:
    """Set up, run until ``stop`` or ``duration``; print where things are and a summary.

    Stop order: the gateway (its serial reader closes its end first), then the simulated
    device and its cable, then the demo PACS, so a deliberate stop is never a lost port.
    """
    started = invocation or this_invocation()
    cmd = command(started)
    console = DemoConsole(sys.stdout)
    root = (workdir or Path(tempfile.mkdtemp(prefix="dicom-gateway-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "drop").mkdir(exist_ok=True)
    authority = TestAuthority(root / "tls", name="Demo CA (not for production)")
    pacs_cert = authority.issue("pacs", "DEMO_PACS")
    authority.issue("gateway", "EDGE_GW")
    port = _free_port()
    config_path = root / "gateway.toml"
    web_port = _free_port()
    config_text = CONFIG_TEMPLATE.format(
        command=cmd, root=_quoted(root), config=_quoted(config_path), port=port, web_port=web_port
    )
    device = DemoSerialDevice(root) if DemoSerialDevice.available() else None
    pacs = DemoPacs(
        root / "pacs",
        port,
        _server_context(authority, pacs_cert.cert, pacs_cert.key),
        on_stored=lambda path, ds: console.event(delivery_line(path, ds)),
    )
    code: list[int] = []
    gateway_stop = threading.Event()
    runner: threading.Thread | None = None
    # Everything started is stopped whatever fails after it (a closed stdout included): a
    # gateway thread left running would keep the process alive after its main thread died.
    try:
        if device is not None:
            device.start()
            config_text += device.config_section()
        config_path.write_text(config_text, "utf-8")
        config = load_config(config_path)
        pacs.start()
        gateway = Gateway(config, SystemClock(), SystemdNotifier(environ={}))
        runner = threading.Thread(
            target=lambda: code.append(gateway.run(gateway_stop)), name="demo-gateway"
        )
        runner.start()
        samples = write_samples(root / "drop")
        if device is not None:
            device.play(lambda: all(r.port.is_open for r in gateway.serial_readers))
        say = console.say
        say(f"demo: working folder   {root}")
        say(f"demo: configuration    {config_path}")
        say(f"demo: drop files into  {root / 'drop'}  (name them PATIENTID_NAME_anything.ext)")
        say(f"demo: demo PACS (TLS)  127.0.0.1:{port}, received files in {root / 'pacs'}")
        say(f"demo: the command      {cmd}")
        hint = path_hint(started)
        if hint is not None:
            say(f"demo:                  ({hint})")
        say(f"demo: queue            {cmd} queue list --config {_quoted(config_path)}")
        _print_panel(console, config.gateway.state_dir, web_port, runner)
        if device is not None:
            say(f"demo: serial device    line-kv reports played onto {device.device_end}")
            say(f"demo:                  (the gateway reads {device.gateway_end})")
            say(
                f"demo: play more with   {cmd} simulate-device --profile line-kv "
                f"--port {_quoted(device.device_end)}"
            )
        else:
            say("demo: serial device    skipped: socat is not installed (apt install socat)")
        say(f"demo: {len(samples)} sample files dropped; {stop_hint(duration)}")
        console.open()

        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set() and runner.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
    finally:
        gateway_stop.set()
        if runner is not None:
            runner.join(15)
        if device is not None:
            device.stop()
        pacs.stop()
    failed = _count_failed(gateway)
    for line in kept_lines(root):
        console.say(line)
    console.say(f"demo: {pacs.received} received, {failed} failed")
    return code[0] if code else 1


def _quoted(path: Path) -> str:
    """A path as a shell word (the demo's lines are meant to be pasted)."""
    return shlex.quote(str(path))


def _print_panel(
    console: DemoConsole, state_dir: Path, web_port: int, runner: threading.Thread
) -> None:
    """The panel's address and, while no account exists, its one-time setup token."""
    cert = cert_paths(state_dir)[0]  # written after the token, just before the panel listens
    deadline = time.monotonic() + PANEL_WAIT_SECONDS
    while not cert.exists() and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not cert.exists():
        console.say("demo: web panel        not started (see the gateway's log)")
        return
    console.say(f"demo: web panel        https://127.0.0.1:{web_port}/  (self-signed certificate:")
    console.say("demo:                  accept the browser's warning for this demo)")
    token = read_token(state_dir)
    if token is None:
        console.say("demo: setup token      none: the panel is set up, log in with your account")
    else:
        console.say(f"demo: setup token      {token}  (once, to create the first engineer)")


def _count_failed(gateway: Gateway) -> int:
    try:
        gateway.spool.open()
        try:
            stats = gateway.spool.stats()
        finally:
            gateway.spool.close()
    except Exception:  # noqa: BLE001 - the summary must not hide the demo's exit code
        return -1
    return sum(s.counts.get(DeliveryState.FAILED, 0) for s in stats.values())
