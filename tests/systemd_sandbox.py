"""The gateway unit's seccomp rules, applied to a test process without systemd.

systemd turns SystemCallFilter=, SystemCallErrorNumber=, MemoryDenyWriteExecute= and
RestrictAddressFamilies= into seccomp filters before it starts the daemon. Tests cannot run
systemd as PID 1 here, so this module builds the same filters with libseccomp (through ctypes)
from the unit file itself, with the syscall groups expanded by `systemd-analyze syscall-filter`,
and loads them into the running process. `sitecustomize_dir()` writes a sitecustomize.py that
does this at interpreter start when GATEWAY_TEST_SANDBOX names a unit file, so the real daemon
runs under the unit's rules. Other settings (namespaces, capabilities, the device cgroup) are
not emulated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV = "GATEWAY_TEST_SANDBOX"

_ALLOW = 0x7FFF0000
_CMP_EQ = 4
_CMP_GE = 5
_CMP_MASKED_EQ = 7
_PROT_WRITE = 0x2
_PROT_EXEC = 0x4
_SHM_EXEC = 0o100000
_AF_MAX = 46


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


@dataclass(frozen=True)
class SandboxSpec:
    """What the unit asks for, in seccomp terms."""

    allowed_syscalls: tuple[str, ...]
    error_number: int
    deny_write_execute: bool
    address_families: tuple[int, ...]


def unit_entries(unit: Path) -> list[tuple[str, str, str]]:
    """Every (section, key, value) of a unit file, in order."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in unit.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            entries.append((section, key.strip(), value.strip()))
    return entries


def service_settings(unit: Path) -> dict[str, list[str]]:
    """Every Key=value of the unit's [Service] section, repeated keys in order."""
    settings: dict[str, list[str]] = {}
    for section, key, value in unit_entries(unit):
        if section == "Service":
            settings.setdefault(key, []).append(value)
    return settings


def _group_members(group: str) -> set[str]:
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    members: set[str] = set()
    for line in out.splitlines()[1:]:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        members |= _group_members(name) if name.startswith("@") else {name}
    return members


def _expand(names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= _group_members(name) if name.startswith("@") else {name}
    return found


def spec_from_unit(unit: Path) -> SandboxSpec:
    """Read SystemCallFilter= (allow list, then ~ removals) and the W^X and family settings."""
    settings = service_settings(unit)
    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        if value.startswith("~"):
            allowed -= _expand(value[1:].split())
        else:
            allowed |= _expand(value.split())
    error = settings.get("SystemCallErrorNumber", ["EPERM"])[-1]
    families = [
        getattr(socket, name)
        for value in settings.get("RestrictAddressFamilies", [])
        for name in value.split()
    ]
    return SandboxSpec(
        allowed_syscalls=tuple(sorted(allowed)),
        error_number=getattr(errno, error),
        deny_write_execute=settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes",
        address_families=tuple(sorted(families)),
    )


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    return lib


def _rule(lib: ctypes.CDLL, ctx: int, action: int, syscall: str, *conds: _ArgCmp) -> None:
    number = lib.seccomp_syscall_resolve_name(syscall.encode())
    if number == -1:  # __NR_SCMP_ERROR: not a syscall libseccomp knows
        return
    array = (_ArgCmp * len(conds))(*conds) if conds else None
    # A syscall this architecture lacks (a pseudo number) is refused here; nothing to filter.
    lib.seccomp_rule_add_array(ctx, action, number, len(conds), array)


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    try:
        if lib.seccomp_load(ctx) != 0:
            raise OSError("seccomp_load failed")
    finally:
        lib.seccomp_release(ctx)


def apply(spec: SandboxSpec) -> None:
    """Load the filters into this process (and every child it execs); there is no way back."""
    lib = _load_library()
    ctx = lib.seccomp_init(_ALLOW)
    if spec.deny_write_execute:
        # systemd's rules: no mapping both writable and executable, no adding PROT_EXEC later.
        eperm = _errno_action(errno.EPERM)
        both = _PROT_WRITE | _PROT_EXEC
        _rule(lib, ctx, eperm, "mmap", _ArgCmp(2, _CMP_MASKED_EQ, both, both))
        for name in ("mprotect", "pkey_mprotect"):
            _rule(lib, ctx, eperm, name, _ArgCmp(2, _CMP_MASKED_EQ, _PROT_EXEC, _PROT_EXEC))
        _rule(lib, ctx, eperm, "shmat", _ArgCmp(2, _CMP_MASKED_EQ, _SHM_EXEC, _SHM_EXEC))
    if spec.address_families:
        refused = _errno_action(errno.EAFNOSUPPORT)
        for family in range(_AF_MAX):
            if family not in spec.address_families:
                _rule(lib, ctx, refused, "socket", _ArgCmp(0, _CMP_EQ, family, 0))
        _rule(lib, ctx, refused, "socket", _ArgCmp(0, _CMP_GE, _AF_MAX, 0))
    _load(lib, ctx)
    # The allow list goes last: seccomp() itself is not on it.
    if spec.allowed_syscalls:
        ctx = lib.seccomp_init(_errno_action(spec.error_number))
        for name in spec.allowed_syscalls:
            _rule(lib, ctx, _ALLOW, name)
        _load(lib, ctx)


def apply_from_environment() -> None:
    """sitecustomize's entry point: apply the spec stored in $GATEWAY_TEST_SANDBOX, if any."""
    path = os.environ.get(ENV)
    if path:
        data = json.loads(Path(path).read_text("utf-8"))
        apply(
            SandboxSpec(
                tuple(data["allowed_syscalls"]),
                data["error_number"],
                data["deny_write_execute"],
                tuple(data["address_families"]),
            )
        )


def sandbox_environment(unit: Path, folder: Path) -> dict[str, str]:
    """Environment for a child Python that starts under ``unit``'s seccomp rules."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = spec_from_unit(unit)
    spec_path = folder / "sandbox.json"
    spec_path.write_text(
        json.dumps(
            {
                "allowed_syscalls": spec.allowed_syscalls,
                "error_number": spec.error_number,
                "deny_write_execute": spec.deny_write_execute,
                "address_families": spec.address_families,
            }
        ),
        "utf-8",
    )
    repo = Path(__file__).resolve().parent.parent
    (folder / "sitecustomize.py").write_text(
        "from tests.systemd_sandbox import apply_from_environment\n\napply_from_environment()\n",
        "utf-8",
    )
    path = os.pathsep.join(
        p for p in (str(folder), str(repo), os.environ.get("PYTHONPATH", "")) if p
    )
    return {"PYTHONPATH": path, ENV: str(spec_path)}
