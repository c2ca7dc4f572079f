"""Real DICOM peers for the tests: DCMTK and dicom3tools programs started and stopped per test.

With REQUIRE_PEERS=1 (CI) a missing program fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.harness import stop_process


def require_tool(name: str) -> str:
    """Path of a peer program; skip (or fail under REQUIRE_PEERS=1) when it is not installed."""
    found = shutil.which(name)
    if found:
        return found
    message = f"peer program {name!r} is not installed (Debian: dcmtk, dicom3tools, socat)"
    if os.environ.get("REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class StoreSCP:
    """DCMTK storescp as the PACS: plain or TLS with a required client certificate."""

    def __init__(
        self,
        output_dir: Path,
        *,
        port: int | None = None,
        ae_title: str = "PACS",
        tls: tuple[Path, Path, Path] | None = None,  # (ca, cert, key)
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.binary = require_tool("storescp")
        self.output_dir = output_dir
        self.port = port or free_port()
        self.ae_title = ae_title
        self.tls = tls
        self.extra_args = list(extra_args)
        self.log_path = log_path or output_dir.parent / f"storescp-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        """Start and wait until it listens."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-aet", self.ae_title, "-od", str(self.output_dir), "-uf"]
        if self.tls:
            ca, cert, key = self.tls
            args += ["+tls", str(key), str(cert), "-pw", "+cf", str(ca), "-rc"]
        args += [*self.extra_args, str(self.port)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """Stop the peer and reap it."""
        stop_process(self.proc)
        self.proc = None

    def received(self) -> list[Path]:
        """Files the peer has written so far."""
        if not self.output_dir.exists():
            return []
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def storescp_syntax_config(
    path: Path, sop_classes: Iterable[str], syntaxes: Sequence[str]
) -> list[str]:
    """storescp arguments for a PACS that accepts ``sop_classes`` only in ``syntaxes`` (UIDs).

    Writes a DCMTK association configuration (``-xf``, see /etc/dcmtk/storescp.cfg) to
    ``path``; Verification is accepted too, as every PACS does.
    """
    lines = ["[[TransferSyntaxes]]", "[Only]"]
    lines += [f"TransferSyntax{i} = {uid}" for i, uid in enumerate(syntaxes, 1)]
    lines += ["[[PresentationContexts]]", "[Only]"]
    classes = ["1.2.840.10008.1.1", *sorted(set(sop_classes))]
    lines += [f"PresentationContext{i} = {uid}\\Only" for i, uid in enumerate(classes, 1)]
    lines += ["[[Profiles]]", "[Default]", "PresentationContexts = Only"]
    path.write_text("\n".join(lines) + "\n", "ascii")
    return ["-xf", str(path), "Default"]


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """Run dicom3tools' dciodvfy; return (errors, warnings) lines."""
    binary = require_tool("dciodvfy")
    proc = subprocess.run(
        [binary, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def dcmdjpeg_pixels(path: Path, workdir: Path) -> np.ndarray:
    """The pixels of a JPEG-compressed DICOM file as DCMTK's dcmdjpeg decodes them (to RGB)."""
    binary = require_tool("dcmdjpeg")
    out = workdir / f"{path.stem}.dcmdjpeg.dcm"
    subprocess.run(
        [binary, "+cp", str(path), str(out)], capture_output=True, timeout=60, check=True
    )
    return np.asarray(pydicom.dcmread(out).pixel_array)
