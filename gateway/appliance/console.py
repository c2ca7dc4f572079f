"""What the field engineer reads: the console text, SETUP-TOKEN.txt, FIRSTBOOT-REPORT.txt.

Pure text builders, and the two writes to the console:

* ``/run/dicom-gateway/issue``: agetty prints it above every login prompt on HDMI and serial,
  through the image's link ``/etc/issue.d/50-dicom-gateway.issue`` (agetty reads /etc/issue and
  /etc/issue.d; it looks at /run/issue.d only when there is no /etc/issue, and Debian ships
  one). Its address is agetty's own escape ``\\4`` (the first configured interface's IPv4
  address, looked up when the prompt is shown and again whenever the addresses change), so the
  text is right even though first boot runs before the network is up. Every other backslash
  is doubled, so a name can never become an escape.
* ``/dev/console``: the same lines, printed once by first boot as it finishes (with the
  addresses known at that moment, usually none yet: the issue text is the one to read).

The setup token appears only here, in the token file on the FAT partition and in the panel's
state folder; never in the report, the journal or anything sent over the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from gateway.textsafe import one_line

ISSUE_FILE = "/run/dicom-gateway/issue"  # /etc/issue.d/50-dicom-gateway.issue links here
CONSOLE = "/dev/console"
TOKEN_FILE = "SETUP-TOKEN.txt"  # noqa: S105 - a file name, not a secret
REPORT_FILE = "FIRSTBOOT-REPORT.txt"
CRLF = "\r\n"  # files on the FAT partition are read with Windows editors too


def panel_urls(hostname: str, port: int, addresses: Sequence[str]) -> list[str]:
    """``https://<hostname>.local`` and ``https://<address>`` (port added unless 443)."""
    suffix = "" if port == 443 else f":{port}"
    hosts = [f"{hostname}.local", *(f"[{a}]" if ":" in a else a for a in addresses)]
    return [f"https://{h}{suffix}" for h in hosts]


def _lines(
    hostname: str,
    urls: Sequence[str],
    token: str | None,
    problems: Sequence[str],
    clock: str | None,
) -> list[str]:
    # Every line is one display line whatever a name or a refused file's key holds.
    lines = [f"DICOM edge gateway {hostname}", "Web panel:"]
    lines += [f"  {url}" for url in urls]
    if token is not None:
        lines += [
            f"One-time setup token: {token}",
            f"  (also in {TOKEN_FILE} on the card; it stops working once the panel is set up)",
        ]
    lines += [f"First boot: {problem}" for problem in problems]
    if clock is not None:
        lines.append(f"Clock: {clock}")
    return [one_line(line) for line in lines]


def issue_text(
    hostname: str,
    port: int,
    token: str | None,
    problems: Sequence[str] = (),
    clock: str | None = None,
) -> str:
    """The agetty issue snippet; the address is agetty's ``\\4`` escape, filled in at display."""
    suffix = "" if port == 443 else f":{port}"
    lines = [
        line.replace("\\", "\\\\")
        for line in _lines(hostname, panel_urls(hostname, port, []), token, problems, clock)
    ]
    lines.insert(3, f"  https://\\4{suffix}")  # after the .local URL
    return "\n" + "\n".join(lines) + "\n\n"


def console_text(
    hostname: str,
    port: int,
    addresses: Sequence[str],
    token: str | None,
    problems: Sequence[str] = (),
) -> str:
    """What first boot prints on /dev/console as it ends."""
    body = _lines(hostname, panel_urls(hostname, port, addresses), token, problems, None)
    return "\r\n" + "\r\n".join(body) + "\r\n"


def token_file_text(token: str, hostname: str, port: int) -> str:
    """SETUP-TOKEN.txt: the token and what it is for."""
    url = panel_urls(hostname, port, [])[0]
    lines = [
        f"DICOM edge gateway {hostname}: one-time setup token",
        "",
        f"    {token}",
        "",
        f"Open {url} (or the https:// address shown on the box's screen),",
        "enter this token and create the first engineer account.",
        "It works once: it stops working as soon as the panel is set up,",
        "and the box then deletes this file.",
    ]
    return CRLF.join(lines) + CRLF


def report_text(when: str, lines: Sequence[str]) -> str:
    """FIRSTBOOT-REPORT.txt: what this boot imported or refused from the card, and why."""
    body = [f"DICOM edge gateway: files imported from this card ({when})", "", *lines]
    return CRLF.join(body) + CRLF


def write_console(path: Path, text: str) -> bool:
    """Print ``text`` on the console device at ``path``; False if there is none to write to.

    Non-blocking and best effort: a serial console without a reader must not hold up the boot,
    and a missing console is not a failure of first boot.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_APPEND | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        with contextlib.suppress(OSError):
            os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return True
