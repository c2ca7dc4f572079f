"""The real daemon as systemd runs it: the notify protocol over a real NOTIFY_SOCKET, and the
unit's seccomp rules (system calls, W^X memory, address families) applied to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.notify import SystemdNotifier
from tests.conftest import Pki
from tests.harness import GatewayProcess, wait_until, write_config
from tests.listener.support import echoscu
from tests.peers import StoreSCP, free_port, require_tool
from tests.systemd_sandbox import sandbox_environment
from tests.test_daemon import drop, jpeg_bytes

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "dicom-gateway.service"
WATCHDOG_USEC = 500_000


def collect(gw: GatewayProcess, seconds: float) -> list[str]:
    """Every notify message that arrives in the next ``seconds``."""
    assert gw.notify is not None
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        gw.notify.settimeout(left)
        try:
            got.append(gw.notify.recv(65536).decode())
        except TimeoutError:
            break
    gw.messages.extend(got)
    return got


def test_watchdog_pings_come_at_the_asked_interval_with_status_lines_and_stopping(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = storescp_factory(tmp_path / "pacs").start()
    gw = GatewayProcess(
        write_config(tmp_path, pacs.port), env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )
    gateways.append(gw)
    ready = gw.start().wait_for_message("READY=1")
    assert "\nSTATUS=pacs: 0 queued, 0 failed" in ready

    window = collect(gw, 4 * WATCHDOG_USEC / 1e6)
    # systemd kills the service when a whole interval passes without a ping.
    assert window.count("WATCHDOG=1") >= 3, window

    # The periodic STATUS= (every 10 s) follows the queue, not just the READY line.
    drop(tmp_path / "drop", "P001_DOE^JANE_1.jpg", jpeg_bytes(1))
    assert wait_until(lambda: len(pacs.received()) == 1, 30), gw.log()
    status = gw.wait_for_message("STATUS=", 30)
    assert status.startswith("STATUS=pacs: ") and "queued" in status

    assert gw.terminate() == 0
    assert "STOPPING=1" in gw.messages
    assert gw.messages.index("STOPPING=1") > gw.messages.index(ready)


def test_without_watchdog_usec_no_ping_is_sent(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = storescp_factory(tmp_path / "pacs").start()
    gw = GatewayProcess(write_config(tmp_path, pacs.port))
    gateways.append(gw)
    gw.start()
    window = collect(gw, 2.0)
    assert "WATCHDOG=1" not in window
    assert gw.terminate() == 0


def test_extend_timeout_sends_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        notifier.extend_timeout(90)
        notifier.extend_timeout(0.25)
        got = [server.recv(4096).decode() for _ in range(2)]
        notifier.close()
    finally:
        server.close()
    assert got == ["EXTEND_TIMEOUT_USEC=90000000", "EXTEND_TIMEOUT_USEC=250000"]
    with pytest.raises(ValueError, match="positive"):
        notifier.extend_timeout(0)


def test_a_daemon_whose_notify_socket_cannot_be_connected_still_runs(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    # A NOTIFY_SOCKET inherited from a container or sudo -E: READY=1 raised AttributeError
    # (sdnotify left socket None) and the box stopped at start.
    pacs = storescp_factory(tmp_path / "pacs").start()
    gw = GatewayProcess(
        write_config(tmp_path, pacs.port),
        env={"NOTIFY_SOCKET": str(tmp_path / "nonexistent" / "notify")},
    )
    gateways.append(gw)
    gw.start(wait_ready=False)
    assert wait_until(lambda: '"gateway ready"' in gw.log() or gw.proc.poll() is not None, 30)
    assert gw.proc is not None and gw.proc.poll() is None, gw.log()
    lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    disabled = [line for line in lines if line.get("event") == "systemd notification disabled"]
    assert len(disabled) == 1, gw.log()
    assert disabled[0]["notify_socket"] == str(tmp_path / "nonexistent" / "notify")
    drop(tmp_path / "drop", "P001_DOE^JANE_1.jpg", jpeg_bytes(1))
    assert wait_until(lambda: len(pacs.received()) == 1, 30), gw.log()
    assert gw.terminate() == 0, gw.log()


PROBE = r"""
import ctypes, json, mmap, os, socket
from pathlib import Path
out = {}
def attempt(name, action):
    try:
        action()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = f"refused {exc.errno}"
attempt("wx_mmap", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
attempt("setuid", lambda: os.setuid(0))
attempt("tcp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
from argon2 import PasswordHasher
hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
out["argon2"] = hasher.verify(hasher.hash("secret"), "secret")
import datetime
from gateway.web.tlscert import generate_self_signed
folder = Path(os.environ["PROBE_DIR"])
generate_self_signed(folder / "c.pem", folder / "k.pem", ["box"], [],
                     datetime.datetime.now(datetime.UTC))
out["self_signed"] = (folder / "c.pem").exists()
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
out["ctypes_callback"] = callback(1)
from gateway.spool.durable import _renameat2_noreplace
(folder / "a").write_bytes(b"1")
(folder / "b").write_bytes(b"2")
attempt("renameat2_onto", lambda: _renameat2_noreplace(folder / "a", folder / "b"))
attempt("renameat2", lambda: _renameat2_noreplace(folder / "a", folder / "c"))
print(json.dumps(out))
"""


def test_the_units_seccomp_rules_bite_and_the_libraries_we_load_still_work(
    tmp_path: Path,
) -> None:
    env = {**os.environ, **sandbox_environment(UNIT, tmp_path / "sandbox")}
    env["PROBE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # sitecustomize reports a failed filter load on stderr
    out = json.loads(done.stdout)
    # The emulation is live: what the unit forbids fails as systemd would make it fail.
    assert out["wx_mmap"] == "refused 1"  # EPERM (MemoryDenyWriteExecute)
    assert out["netlink"] == "refused 97"  # EAFNOSUPPORT (RestrictAddressFamilies)
    assert out["packet"] == "refused 97"
    assert out["setuid"] == "refused 1"  # EPERM (@privileged removed, SystemCallErrorNumber)
    # ...and what the gateway and its panel use works: IPv6 sockets, argon2 (cffi),
    # cryptography (the panel's self-signed certificate), libffi closures.
    assert out["tcp6"] == "allowed"
    assert out["argon2"] is True
    assert out["self_signed"] is True
    assert out["ctypes_callback"] == 2
    # renameat2(RENAME_NOREPLACE), through ctypes: FTP uploads land with it (refused, it would
    # fail every upload with EPERM rather than fall back).
    assert out["renameat2_onto"] == "refused 17"  # EEXIST: the name is not replaced
    assert out["renameat2"] == "allowed"


@pytest.mark.peers
def test_gateway_under_the_units_seccomp_rules_delivers_over_tls_and_answers_echo(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    require_tool("echoscu")
    pacs = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    listener_port = free_port()
    config = write_config(
        tmp_path,
        pacs.port,
        tls=(pki.ca, pki.gateway.cert, pki.gateway.key),
        gateway_extra=f'\n[dicom_listener]\nbind = "127.0.0.1"\nport = {listener_port}\n',
    )
    env = sandbox_environment(UNIT, tmp_path / "sandbox")
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    gw = GatewayProcess(config, env=env)
    gateways.append(gw)
    gw.start()
    assert gw.proc is not None
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    # Mode 2 (filter) with ours loaded: the W^X/families filter and the allow list.
    assert "Seccomp:\t2" in status and "Seccomp_filters:\t2" in status, status

    folder = tmp_path / "drop"
    for n in range(3):
        drop(folder, f"P00{n}_DOE^JANE_{n}.jpg", jpeg_bytes(n))
    assert wait_until(lambda: len(pacs.received()) == 3, 30), gw.log()
    answered = echoscu(listener_port, called="EDGE_GW")
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert collect(gw, 4 * WATCHDOG_USEC / 1e6).count("WATCHDOG=1") >= 3
    assert gw.terminate() == 0
    assert "Error in sitecustomize" not in gw.log()
    assert "STOPPING=1" in gw.messages


def test_the_panels_restart_is_a_reload_to_systemd_not_a_stop(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    """Save a destination in the panel: the daemon restarts in place. systemd must see a
    reload (RELOADING=1, the watchdog stretched over the exec), then READY=1 from the same PID
    with the unit's watchdog back. STOPPING=1 here put the booted box's unit in its stop state:
    the new process was killed at TimeoutStopSec, and the panel never came back with the change.
    """
    import httpx

    from gateway.web.auth.setup import read_token
    from tests.web.panelkit import csrf_of

    pacs = storescp_factory(tmp_path / "pacs").start()
    web_port = free_port()
    config = write_config(tmp_path, pacs.port)
    config.write_text(
        config.read_text().replace(
            "[web]\nenabled = false\n",
            f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {web_port}\n',
        )
    )
    gw = GatewayProcess(config, env={"WATCHDOG_USEC": "30000000"})
    gateways.append(gw)
    gw.start()
    assert gw.proc is not None
    pid = gw.proc.pid
    token = read_token(tmp_path / "state")
    assert token is not None
    with httpx.Client(base_url=f"https://127.0.0.1:{web_port}", verify=False, timeout=30) as web:
        form = csrf_of(web.get("/setup").text)
        user = {"username": "fieldeng", "password": "a-long-field-password-1"}
        done = web.post(
            "/setup",
            data={"csrf_token": form, "token": token, **user, "password2": user["password"]},
        )
        assert done.status_code == 303, done.text
        seen = len(gw.messages)
        saved = web.post(
            "/destinations/save",
            data={
                "csrf_token": csrf_of(web.get("/destinations/new").text),
                "original": "",
                "name": "second",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": str(pacs.port),
                "connect_timeout": "5",
            },
        )
        assert saved.status_code == 303, saved.text

    def ready_again() -> bool:
        collect(gw, 0.5)
        return any(m.startswith("READY=1") for m in gw.messages[seen:])

    assert wait_until(ready_again, 90), gw.messages[seen:]
    after = gw.messages[seen:]
    assert "STOPPING=1" not in after, after
    (reload,) = [m for m in after if m.startswith("RELOADING=1")]
    assert "\nWATCHDOG_USEC=300000000" in reload and "\nEXTEND_TIMEOUT_USEC=" in reload
    ready = next(m for m in after if m.startswith("READY=1"))
    assert after.index(reload) < after.index(ready)
    assert ready.endswith("\nWATCHDOG_USEC=30000000")  # the unit's interval again
    assert "second" in ready  # the new file's destination is in the status
    assert gw.proc.poll() is None and gw.proc.pid == pid  # exec in place: systemd's main PID
    assert gw.terminate() == 0
    assert gw.messages[-1] == "STOPPING=1" or "STOPPING=1" in gw.messages[seen:]
