"""The qemu image booted end to end (make image-test; issue 12 item 7; docs/image.md).

One box, two boots, in the order a field engineer meets it:

1. The card as flashed, plus what an engineer may put on its FAT partition from a laptop: a
   ``dicom-gateway.toml`` naming the device's drop folder, and ``ssh/authorized_keys``.
2. First boot (on a card 1 GiB larger than the image: the data partition and its ext4 are grown
   to the card's end, online): the gateway reaches READY (its panel answers /healthz over HTTPS)
   within the boot budget; the setup token is read off the FAT with mtools, never over the
   network.
3. The panel (HTTPS, forwarded port): no default credential is accepted; the token sets the first
   engineer's password; a destination is set through the panel's destination form, pointing at a
   DCMTK storescp on the host's loopback (GUEST_HOST:11112 from inside the box, the only place
   outside it the box can reach: qemu's guestfwd).
4. The device's share account gets its password in the panel (Device accounts); before that and
   after it no guest, default or guessable login gets into the share. A JPEG from /usr/share (not
   ours) is written into the box's SMB share with smbclient, as the device would, and reaches
   storescp as DICOM that dciodvfy finds no error in.
5. A second JPEG is written while the PACS is down and taken in (queued) by the gateway; then the
   plug is pulled (SIGKILL to qemu).
6. Second boot: nothing lost (the second study arrives, the account and the destination are
   still there), first boot not repeated (its step markers, the serial, the panel's certificate
   and machine-id unchanged; no new token), no default credential accepted by panel, SSH or
   Samba.

Measured and printed (and written to ``measurements.json`` beside the console logs): time to
READY of each boot, idle RSS of the gateway and of the whole box (from /proc inside the box),
the image's size raw and .xz.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.harness import wait_until
from tests.image.box import GUEST_HOST, Box, fat_of, partitions, sparse_copy
from tests.peers import StoreSCP, dciodvfy, require_tool

pytestmark = pytest.mark.image

TREE = Path(__file__).resolve().parents[2]
# A TCG boot of the arm64 image on a shared 2-core machine: first boot makes keys and imports
# the card; the bound only keeps a broken image from hanging the run.
BOOT_BUDGET = float(os.environ.get("IMAGE_BOOT_BUDGET", "1500"))
ENGINEER = ("fieldeng", "a-long-field-password-1")
# Accounts and passwords a box must never accept: the usual vendor defaults.
DEFAULTS = [
    ("admin", "admin"),
    ("admin", "password"),
    ("admin", ""),
    ("root", "root"),
    ("root", ""),
    ("pi", "raspberry"),
    ("dicom-gateway", "dicom-gateway"),
]
CARD_EXTRA = 1 << 30  # the card is this much larger than the image
PACS_GUEST_PORT = 11112  # the PACS as the box sees it: GUEST_HOST:11112 -> storescp
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN_RE = re.compile(r"^\s{4}(\S+)\s*$", re.MULTILINE)

CARD_CONFIG = """\
# Put on the card's FAT partition before the first boot, as a field engineer would.
[modality]
modality = "OT"
manufacturer = "Acme"

[[ingest.folder]]
name = "export"
path = "/srv/drop"
filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'
settle_seconds = 2
share = "export"
share_user = "modality"
"""
# The device's account on the share; its password is set in the panel (Device accounts).
SHARE_USER, SHARE_PASSWORD = "modality", "Export-share-pw-71"


def image_path() -> Path:
    version = re.search(
        r'^__version__ = "(.+)"$', (TREE / "gateway/__init__.py").read_text(), re.MULTILINE
    )
    assert version
    default = TREE / "build" / "image" / f"dicom-gateway-{version.group(1)}-qemu-arm64.img"
    path = Path(os.environ.get("IMAGE", default))
    if not path.is_absolute():
        path = TREE / path
    assert path.is_file(), f"{path}: build it first (make image VARIANTS=qemu)"
    return path


def a_jpeg() -> Path:
    """A JPEG the Debian machine carries (someone else's encoder), the largest found."""
    found = sorted(
        (p for p in Path("/usr/share").rglob("*.jpg") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    if not found:
        pytest.skip("no JPEG under /usr/share")
    return found[-1]


@dataclass
class Ssh:
    """Root on the box with the key put on its card."""

    port: int
    key: Path

    def base(self, *options: str) -> list[str]:
        return [
            "ssh", "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
            "-o", "LogLevel=ERROR", *options,
        ]  # fmt: skip

    def run(self, command: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*self.base("-i", str(self.key), "-o", "BatchMode=yes"), "root@127.0.0.1", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"{command}: {done.returncode} {done.stderr}"
        return done.stdout

    def methods_offered(self, user: str) -> str:
        """What the server lets a client without a key try (the 'can continue' list)."""
        done = subprocess.run(
            [*self.base("-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", "-v"),
             f"{user}@127.0.0.1", "true"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode != 0, f"{user} got in without a key"
        found = re.findall(r"Authentications that can continue: (\S+)", done.stderr)
        return found[-1] if found else done.stderr[-500:]


class Panel:
    """A browser on the box's panel, trusting the certificate the box showed the first time."""

    def __init__(self, port: int, cert_pem: str) -> None:
        context = ssl.create_default_context(cadata=cert_pem)
        # The certificate names the box (dicom-gateway-<serial>, its addresses), not the
        # forwarded 127.0.0.1: the pinned certificate is the check.
        context.check_hostname = False
        self.client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=60)

    def close(self) -> None:
        self.client.close()

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        found = CSRF_RE.search(page.text)
        assert found, f"{path}: {page.status_code} no form"
        return found.group(1)

    def login(self, user: str, password: str) -> httpx.Response:
        token = self.csrf("/login")
        return self.client.post(
            "/login", data={"csrf_token": token, "username": user, "password": password}
        )

    def status(self) -> dict[str, object]:
        answer = self.client.get("/api/v1/status")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def panel_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=30)


def fingerprint(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def healthy(port: int) -> bool:
    """The gateway's panel answers /healthz over HTTPS (it serves only once the daemon runs)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only "is it up": the certificate is pinned later
    try:
        answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=10)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def wait_ready(box: Box) -> float:
    """Seconds from qemu's start to the gateway's panel answering /healthz.

    Not systemd's "Started dicom-gateway.service" console line: seen on the real boot, the
    console stops showing unit status once getty's login prompt is up, before the gateway's
    READY, so that line never comes."""
    port = box.ports["panel"]
    up = wait_until(
        lambda: healthy(port) or (box.proc is not None and box.proc.poll() is not None),
        BOOT_BUDGET,
        interval=3,
    )
    assert up and healthy(port), f"not up in {BOOT_BUDGET} s:\n{box.console_text()[-4000:]}"
    seconds = time.monotonic() - box.started_at
    failed = [f for f in re.findall(r"FAILED.*", box.console_text()) if "dicom-gateway" in f]
    assert not failed, failed
    return seconds


def dicom_arrivals(pacs: StoreSCP) -> list[Path]:
    return [p for p in pacs.received() if not p.name.startswith(".")]


def box_memory(ssh: Ssh) -> dict[str, int]:
    """Idle memory from /proc inside the box, in KiB."""
    text = ssh.run(
        "pid=$(systemctl show -p MainPID --value dicom-gateway.service); "
        "grep VmRSS /proc/$pid/status; grep -E '^(MemTotal|MemAvailable|MemFree):' /proc/meminfo; "
        "cat /proc/[0-9]*/status 2>/dev/null | awk '/^VmRSS/ {s+=$2} END {print \"AllRSS:\", s}'"
    )
    values = dict(re.findall(r"^(\w+):\s+(\d+)", text, re.MULTILINE))
    return {
        "gateway_rss_kib": int(values["VmRSS"]),
        "all_processes_rss_kib": int(values["AllRSS"]),
        "mem_used_kib": int(values["MemTotal"]) - int(values["MemAvailable"]),
        "mem_total_kib": int(values["MemTotal"]),
    }


def firstboot_markers(ssh: Ssh) -> str:
    return ssh.run(
        "cd /data/system && stat -c '%n %Y %s' firstboot/* serial machine-id "
        "/var/lib/dicom-gateway/web/*.pem 2>&1; cat serial machine-id"
    )


@pytest.fixture
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    for tool in ("qemu-system-aarch64", "mtype", "mcopy", "sfdisk", "ssh", "ssh-keygen"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("box")
    disk = sparse_copy(image_path(), work / "card.img")
    # A card larger than the image, as every real one is: first boot grows the data partition
    # and its mounted ext4 for real (online resize2fs under the box's own kernel).
    with disk.open("r+b") as card:
        card.truncate(disk.stat().st_size + CARD_EXTRA)
    running = Box(disk, work)
    yield running
    running.stop()
    print(f"box work folder (consoles, measurements): {work}")


def smb_put(
    box: Box, source: Path, name: str, user: str, password: str
) -> subprocess.CompletedProcess[str]:
    """smbclient writes ``source`` as ``name`` into the box's share (SMB3), as a device would."""
    return subprocess.run(
        ["smbclient", "//127.0.0.1/export", "-p", str(box.ports["smb"]), "-U",
         f"{user}%{password}", "-m", "SMB3", "-c", f'put "{source}" "{name}"'],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def drop_through_smb(box: Box, jpeg: Path, name: str) -> None:
    """The device's export: into the box's SMB share with the account set in the panel."""
    done = smb_put(box, jpeg, name, SHARE_USER, SHARE_PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr


def smb_ready(box: Box) -> bool:
    """smbd answers on the share port (it starts after the gateway's first boot steps)."""
    done = subprocess.run(
        ["smbclient", "-N", "-L", "//127.0.0.1", "-p", str(box.ports["smb"]), "-m", "SMB3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    # Any answer of smbd's own (a refusal included) means it is up; these mean nobody answered.
    down = ("NT_STATUS_CONNECTION_", "NT_STATUS_IO_TIMEOUT", "protocol negotiation failed")
    return not any(s in out for s in down)


def smb_refuses_defaults(box: Box, jpeg: Path) -> None:
    """No guest, no vendor default, not the share account with a guessable password."""
    assert wait_until(lambda: smb_ready(box), 600, interval=5), "smbd never answered"
    tries = [*DEFAULTS, ("guest", ""), (SHARE_USER, SHARE_USER), (SHARE_USER, "")]
    for user, password in tries:
        done = smb_put(box, jpeg, "should-not-land.jpg", user, password)
        assert done.returncode != 0, (user, password, done.stdout)
        assert "NT_STATUS_LOGON_FAILURE" in done.stdout + done.stderr, (user, done.stdout)
    anonymous = subprocess.run(
        ["smbclient", "-N", "-L", "//127.0.0.1", "-p", str(box.ports["smb"]), "-m", "SMB3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "export" not in anonymous.stdout, anonymous.stdout


def test_flashed_card_to_first_study_power_cut_and_reboot(box: Box, tmp_path: Path) -> None:
    measured: dict[str, object] = {}
    image = image_path()
    measured["image_bytes"] = image.stat().st_size
    xz = image.with_name(image.name + ".xz")
    measured["image_xz_bytes"] = xz.stat().st_size if xz.exists() else None
    jpeg = a_jpeg()

    # --- 1. the card, as an engineer prepares it -------------------------------------------
    fat = fat_of(box.disk)
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60
    )
    fat.write("dicom-gateway.toml", CARD_CONFIG.encode(), tmp_path)
    fat.write("ssh/authorized_keys", (tmp_path / "id_ed25519.pub").read_bytes(), tmp_path)
    ssh = Ssh(box.ports["ssh"], key)

    pacs = StoreSCP(tmp_path / "pacs", ae_title="PACS").start()
    box.guest_forwards[PACS_GUEST_PORT] = pacs.port
    try:
        # --- 2. first boot -------------------------------------------------------------------
        box.start()
        measured["first_boot_ready_seconds"] = round(wait_ready(box), 1)
        token_file = fat.read("SETUP-TOKEN.txt")
        assert token_file, f"no SETUP-TOKEN.txt on the card: {fat.names()}"
        token_match = TOKEN_RE.search(token_file.decode())
        assert token_match, token_file
        token = token_match.group(1)
        assert token in box.console_text(), "the token is also printed on the console"
        report = fat.read("FIRSTBOOT-REPORT.txt")
        assert report and b"dicom-gateway.toml" in report, report

        cert = panel_certificate(box.ports["panel"])
        panel = Panel(box.ports["panel"], cert)
        # --- 3. no default credential; the token sets the first engineer ---------------------
        # Before setup no account exists: /login sends every browser to /setup (the token).
        assert panel.client.get("/login").headers.get("location", "").endswith("/setup")
        for user in ("root", "admin", "pi"):
            assert ssh.methods_offered(user) == "publickey", user
        setup = panel.client.post(
            "/setup",
            data={
                "csrf_token": panel.csrf("/setup"),
                "token": token,
                "username": ENGINEER[0],
                "password": ENGINEER[1],
                "password2": ENGINEER[1],
            },
        )
        assert setup.status_code == 303, setup.text
        started = panel.status()["started_at"]
        saved = panel.client.post(
            "/destinations/save",
            data={
                "csrf_token": panel.csrf("/destinations/new"),
                "original": "",
                "name": "pacs",
                "ae_title": "PACS",
                "host": GUEST_HOST,
                "port": str(PACS_GUEST_PORT),
                "connect_timeout": "10",
            },
        )
        assert saved.status_code == 303, saved.text

        def restarted_with_destination() -> bool:
            try:
                if panel.client.get("/api/v1/status").status_code != 200:
                    panel.login(*ENGINEER)  # a session need not outlive the restart
                status = panel.status()
            except (httpx.HTTPError, AssertionError):
                return False
            names = [d["name"] for d in status["destinations"]]  # type: ignore[attr-defined]
            return status["started_at"] != started and "pacs" in names

        assert wait_until(restarted_with_destination, 600, interval=3), box.console_text()[-3000:]
        panel.client.cookies.clear()
        for user, password in DEFAULTS:
            assert panel.login(user, password).status_code != 303, (user, password)
        assert panel.login(*ENGINEER).status_code == 303

        # --- 4. the device's account, then its file through the box's SMB share -------------
        smb_refuses_defaults(box, jpeg)  # before any password: the account cannot log in
        devices = panel.client.post(
            f"/devices/smb/{SHARE_USER}/password",
            data={
                "csrf_token": panel.csrf("/devices"),
                "password": SHARE_PASSWORD,
                "password2": SHARE_PASSWORD,
            },
        )
        assert devices.status_code == 303, devices.text
        smb_refuses_defaults(box, jpeg)
        name = "P001_DOE^JANE_1.jpg"
        drop_through_smb(box, jpeg, name)
        assert wait_until(lambda: len(dicom_arrivals(pacs)) >= 1, 600, interval=2), pacs.log()
        (first,) = dicom_arrivals(pacs)
        errors, _warnings = dciodvfy(first)
        assert errors == [], errors
        ds = pydicom.dcmread(first)
        assert ds.PatientID == "P001" and str(ds.PatientName) == "DOE^JANE"
        assert wait_until(lambda: ssh.run("ls -A /srv/drop").strip() == "", 120, interval=2)
        before = firstboot_markers(ssh)
        # The data partition was grown to the card's end and its file system with it.
        data_bytes = int(ssh.run("df -B1 --output=size /data | tail -1").strip())
        shipped = partitions(image)[-1].size
        assert data_bytes > shipped + CARD_EXTRA // 2, (data_bytes, shipped)
        measured["data_filesystem_bytes"] = data_bytes
        measured["idle_first_boot"] = box_memory(ssh)

        # --- 5. a study queued while the PACS is down, then the plug is pulled -------------
        pacs.stop()
        second_name = "P002_ROE^RICHARD_2.jpg"
        drop_through_smb(box, jpeg, second_name)
        assert wait_until(lambda: ssh.run("ls -A /srv/drop").strip() == "", 300, interval=2)
        box.power_cut()
        panel.close()
    finally:
        pacs.stop()

    # --- 6. second boot: nothing lost, first boot not repeated ----------------------------------
    pacs = StoreSCP(tmp_path / "pacs", port=pacs.port, ae_title="PACS").start()
    try:
        box.start()
        measured["second_boot_ready_seconds"] = round(wait_ready(box), 1)
        assert fingerprint(panel_certificate(box.ports["panel"])) == fingerprint(cert)
        assert fat.read("SETUP-TOKEN.txt") is None, "the token file outlived the setup"
        assert token not in box.console_text()
        assert firstboot_markers(ssh) == before
        panel = Panel(box.ports["panel"], cert)
        assert panel.client.get("/setup").status_code == 303  # set up: no second first engineer
        for user, password in DEFAULTS:
            assert panel.login(user, password).status_code != 303, (user, password)
        for user in ("root", "admin", "pi"):
            assert ssh.methods_offered(user) == "publickey", user
        smb_refuses_defaults(box, jpeg)
        assert panel.login(*ENGINEER).status_code == 303
        names = [d["name"] for d in panel.status()["destinations"]]  # type: ignore[attr-defined]
        assert "pacs" in names
        assert wait_until(lambda: len(dicom_arrivals(pacs)) >= 2, 600, interval=2), pacs.log()
        patients = sorted(pydicom.dcmread(p).PatientID for p in dicom_arrivals(pacs))
        assert patients == ["P001", "P002"]
        for path in dicom_arrivals(pacs):
            assert dciodvfy(path)[0] == []
        measured["idle_second_boot"] = box_memory(ssh)
        panel.close()
    finally:
        pacs.stop()
    (box.workdir / "measurements.json").write_text(json.dumps(measured, indent=2))
    print("measurements:", json.dumps(measured, indent=2))
