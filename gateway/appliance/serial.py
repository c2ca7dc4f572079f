"""Who the box is: its serial, its default host name and its persistent machine-id.

The serial (APPLIANCE.md), from the first source that gives one:

* Pi: ``/sys/firmware/devicetree/base/serial-number``: its last 8 hex digits, lowercase;
* qemu, PCs: ``/sys/class/dmi/id/product_serial``: its first 8 hex digits, if it has 8;
* ``/sys/class/dmi/id/product_uuid``: its first 8 hex digits;
* none of them: 8 random hex digits, made once.

A DMI value made of one repeated digit (``00000000``, ``ffffffff``: boards that do not set it)
or a placeholder ("To be filled by O.E.M.", no 8 hex digits) is skipped. The serial is stored in
``/data/system/serial`` and never derived again: the box's name must not change when a source
appears later (a firmware update) or the random fallback would be drawn again.

The default host name is ``dicom-gateway-<serial>``. The machine-id systemd made on the read-only
root at first boot is transient (it lives in /run); it is copied to ``/data/system/machine-id``,
which the initramfs bind-mounts over ``/etc/machine-id`` from the next boot on, so journal,
DHCP client id and everything keyed on it stay the same across boots.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gateway.appliance.files import under

DEVICETREE_SERIAL = "/sys/firmware/devicetree/base/serial-number"
DMI_SERIAL = "/sys/class/dmi/id/product_serial"
DMI_UUID = "/sys/class/dmi/id/product_uuid"
SERIAL_FILE = "/data/system/serial"
MACHINE_ID_FILE = "/data/system/machine-id"
HOSTNAME_FILE = "/data/system/hostname"
HOSTNAME_PREFIX = "dicom-gateway-"
SERIAL_RE = re.compile(r"^[0-9a-f]{8}$")
MACHINE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ANY_LINE_RE = re.compile(r"^[^\n]+$")  # a value checked elsewhere (the host name: network.py)


def _hex_only(value: str) -> str:
    return re.sub(r"[^0-9a-f]", "", value.strip().strip("\x00").lower())


def _usable(digits: str) -> bool:
    return len(digits) >= 8 and len(set(digits)) > 1


def serial_from(devicetree: str | None, dmi_serial: str | None, dmi_uuid: str | None) -> str | None:
    """The serial the table above gives for these source values (None: draw a random one)."""
    if devicetree is not None:
        digits = _hex_only(devicetree)
        if _usable(digits):
            return digits[-8:]
    for value in (dmi_serial, dmi_uuid):
        if value is None:
            continue
        digits = _hex_only(value)
        # A DMI serial with letters beyond hex ("To be filled by O.E.M.") is a placeholder.
        if _usable(digits) and len(digits) * 2 >= len(re.sub(r"[-\s]", "", value.strip())):
            return digits[:8]
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:  # absent, or a DMI file only root may read
        return None


def detect_serial(root: Path, random_hex: Callable[[int], str]) -> str:
    """The serial from the box's firmware files, else ``random_hex(4)`` (8 digits)."""
    found = serial_from(
        _read(under(root, DEVICETREE_SERIAL)),
        _read(under(root, DMI_SERIAL)),
        _read(under(root, DMI_UUID)),
    )
    return found if found is not None else random_hex(4)


def stored_value(path: Path, pattern: re.Pattern[str]) -> str | None:
    """The value in a one-line file if it matches ``pattern``; None when absent or damaged."""
    text = _read(path)
    if text is None:
        return None
    value = text.strip()
    return value if pattern.match(value) else None


def default_hostname(serial: str) -> str:
    """``dicom-gateway-<serial>``."""
    return f"{HOSTNAME_PREFIX}{serial}"
