"""A real smbd for the share tests: run as root on a loopback port picked at run time.

Every file Samba keeps (passdb, secrets, locks, state, cache, pid, logs) is under the test's
temporary folder, so the system's Samba is never touched. The config is the one the gateway
renders (gateway.ingest.remote.smbconf), with only the site (ports, folders) set for the test.
The devices' Unix accounts are made with the gateway's own code (ensure_unix_account) and
deleted when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.ingest.remote.accounts import SambaAccounts, ensure_unix_account
from gateway.ingest.remote.smbconf import SambaSite, render_smb_conf
from tests.harness import stop_process
from tests.peers import free_port, require_tool, wait_for_port

OWNER = "dgwtest-gw"  # stands for the gateway's service user: force user / force group


def require_root() -> None:
    """smbd and useradd need root; skip (or fail under REQUIRE_PEERS=1) without it."""
    if os.geteuid() != 0:
        if os.environ.get("REQUIRE_PEERS") == "1":
            pytest.fail("the SMB share tests run smbd and useradd: they need root")
        pytest.skip("the SMB share tests need root (smbd, useradd)")


@contextlib.contextmanager
def unix_accounts(names: Sequence[str]) -> Iterator[None]:
    """The devices' accounts (made as the gateway makes them) and the owner exist while the
    block runs, then go."""
    made = []
    try:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(OWNER)
            subprocess.run(["userdel", OWNER], check=False, capture_output=True)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OWNER,
            ],
            check=True,
            capture_output=True,
        )
        made.append(OWNER)
        for name in names:
            if ensure_unix_account(name):
                made.append(name)
        yield
    finally:
        for name in reversed(made):
            subprocess.run(["userdel", name], check=False, capture_output=True)


class SambaServer:
    """smbd in the foreground with the gateway's smb.conf for ``config``."""

    def __init__(self, root: Path, config: GatewayConfig, private: Path | None = None) -> None:
        """``private``: where the passdb is (default ``root/private``); the panel tests pass
        the gateway's own (gateway.ingest.remote.smbconf.private_dir of its state_dir)."""
        require_tool("smbd")
        require_tool("smbclient")
        require_root()
        self.root = root
        self.port = free_port()
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        if private is not None:
            private.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.site = SambaSite(
            private_dir=private or root / "private",
            ports=(self.port,),
            interfaces=("127.0.0.1",),
            lock_dir=root / "lock",
            state_dir=root / "state",
            cache_dir=root / "cache",
            pid_dir=root / "pid",
            ncalrpc_dir=root / "ncalrpc",
            log_file=root / "log.smbd",
            owner=OWNER,
            group=OWNER,
        )
        self.conf = root / "smb.conf"
        self.conf.write_text(render_smb_conf(config, self.site), encoding="utf-8")
        self.accounts = SambaAccounts(self.site.private_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    def serve_prepared(self, prepared: Path) -> None:
        """Serve the smb.conf ``share prepare`` wrote (``include``d, so smbd rereads it on
        SIGHUP as the box's smbd rereads /run/dicom-gateway/smb.conf), with only this test's
        site (port, folders, log) set after it. Samba merges a second [global] section into the
        first; the include leaves the parser in the prepared file's last share."""
        site = self.site
        lines = [
            "[global]",
            f"include = {prepared}",
            "[global]",
            f"smb ports = {self.port}",
            "interfaces = 127.0.0.1",
            "bind interfaces only = yes",
            f"lock directory = {site.lock_dir}",
            f"state directory = {site.state_dir}",
            f"cache directory = {site.cache_dir}",
            f"pid directory = {site.pid_dir}",
            f"ncalrpc dir = {site.ncalrpc_dir}",
            "logging = file",
            f"log file = {site.log_file}",
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> SambaServer:
        out = (self.root / "smbd.out").open("ab")
        self.proc = subprocess.Popen(
            [
                "smbd",
                "--foreground",
                "--no-process-group",
                f"--configfile={self.conf}",
                "--debug-stdout",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: smbd signals its whole process group when it stops, and with
            # --no-process-group that group would be the test's.
            start_new_session=True,
        )
        out.close()
        wait_for_port(self.port, 20.0, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in [*sorted(self.root.glob("*.out")), *sorted(self.root.glob("log.*"))]
        )

    def client(
        self,
        share: str,
        user: str | None,
        password: str,
        command: str,
        *,
        protocol: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """smbclient //127.0.0.1/<share> -c <command>, as a device would talk to the box."""
        argv = ["smbclient", "-p", str(self.port), f"//127.0.0.1/{share}"]
        argv += ["-N"] if user is None else ["-U", f"{user}%{password}"]
        if protocol is not None:
            # Lower the client's own floor too, so that the server is what refuses.
            argv += ["-m", protocol, f"--option=client min protocol={protocol}"]
        argv += ["-c", command]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd
        )

    def shares(self, user: str, password: str) -> subprocess.CompletedProcess[str]:
        """smbclient -L: the share list the box offers to ``user`` (a device's browse)."""
        argv = ["smbclient", "-p", str(self.port), "-L", "127.0.0.1", "-g"]
        argv += ["-U", f"{user}%{password}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def owner_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(OWNER)
    return entry.pw_uid, entry.pw_gid
