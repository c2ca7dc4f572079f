"""Helpers for listener tests: settings, a tracked listener factory, raw hostile peers, DCMTK."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from gateway.config import DicomListenerSection, TlsSettings
from tests.conftest import Pki
from tests.peers import free_port, require_tool

LISTENER_AE = "EDGE_GW"


def listener_settings(**overrides: Any) -> DicomListenerSection:
    """[dicom_listener] on a free loopback port with short timeouts."""
    fields: dict[str, Any] = {
        "port": free_port(),
        "bind": "127.0.0.1",
        "handshake_timeout": 2.0,
        "acse_timeout": 5.0,
        "dimse_timeout": 10.0,
        "network_timeout": 3.0,
        "max_associations": 4,
    }
    fields.update(overrides)
    return DicomListenerSection.model_validate(fields)


def server_tls(pki: Pki) -> TlsSettings:
    """Our listener's TLS: the gateway certificate, callers verified against the test CA."""
    return TlsSettings(ca=pki.ca, cert=pki.gateway.cert, key=pki.gateway.key)


def association_rq(calling: str = "MODALITY", called: str = LISTENER_AE) -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing Verification, encoded as pynetdicom would."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 0)
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def pdu_header(pdu_type: int, length: int) -> bytes:
    """The 6-byte PDU header: type, reserved, length (big endian)."""
    return struct.pack(">BBL", pdu_type, 0, length)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the listener."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the listener closed (or reset) ``sock`` within ``timeout``; reads are discarded."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def reply(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the listener sends until it closes the connection."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return bytes(data)


def echoscu(
    port: int,
    *,
    calling: str = "MODALITY",
    called: str = LISTENER_AE,
    tls: tuple[Path, Path, Path] | None = None,  # (ca, cert, key)
    anonymous_tls_ca: Path | None = None,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """DCMTK echoscu against the listener; the completed process (exit code, output)."""
    args = [require_tool("echoscu"), "-aet", calling, "-aec", called, "-to", "5", "-ta", "5"]
    if tls is not None:
        ca, cert, key = tls
        args += ["+tls", str(key), str(cert), "-pw", "+cf", str(ca)]
    elif anonymous_tls_ca is not None:
        args += ["+tla", "+cf", str(anonymous_tls_ca)]
    args += [*extra, "127.0.0.1", str(port)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


class Child:
    """A listener in a child process (tests/listener/memchild.py) and its line protocol."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.listener.memchild", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        assert ready[:1] == ["READY"], ready
        self.port = int(ready[1])

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def mem(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.ask("mem"))
        return report

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
