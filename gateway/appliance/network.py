"""The box's network and time settings: ``network.toml``, validated strictly, rendered for systemd.

The file (on the FAT partition before first boot, then ``/data/system/network.toml``)::

    hostname = "ct-room-2-gateway"      # optional; absent: the name first boot gave the box

    [interface]
    name = ["eth0"]                     # link names or globs; default ["en*", "eth*"]
    mode = "static"                     # "dhcp" (default) or "static"
    address = "192.0.2.10/24"           # static only: address and prefix (CIDR)
    gateway = "192.0.2.1"               # static only, optional: in the address's subnet
    dns = ["192.0.2.53"]                # addresses; with DHCP, added to the lease's
    domains = ["radiology.example.org"] # search domains
    ipv6_slaac = false                  # accept router advertisements (SLAAC); default off

    [time]
    ntp = ["ntp.example.org"]           # host names or addresses; with DHCP, the lease's too

Rules (each broken one is reported with its key and line, as check-config does for
gateway.toml, by the same machinery):

* every value is checked against what systemd accepts *and* against the characters an INI line
  can carry: no value can end its line or open a section in a rendered file;
* ``static`` needs ``address``; ``address`` and ``gateway`` are refused with ``dhcp``;
* the address is a host of its prefix (not the network or, for IPv4, the broadcast address),
  not loopback, multicast, link-local or unspecified; the gateway is in its subnet, of the same
  IP version, and not the address itself;
* a hostname is what systemd's hostname_is_valid() takes: dot-separated labels of letters,
  digits and '-', no label starting or ending with '-', at most 63 characters in all.

Rendering is pure (:func:`render`): settings in, the text of each file systemd reads out, keyed
by its absolute path; :func:`write_rendered` puts them under a root. No setting: DHCP on every
``en*``/``eth*`` link (:func:`default_network`). ``FallbackNTP=`` is never left to systemd's
compiled-in list: systemd 252 falls back to it (Debian's internet pool) even after an empty
``FallbackNTP=`` (checked against the real systemd-timesyncd, tests/appliance), so the
fallback names the configured servers, or the box's own loopback when there are none; a
hospital network is never made to reach the internet for time.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.config import ConfigError, locator, read_toml, validation_problems
from gateway.configtoml import dumps
from gateway.spool.durable import write_bytes_durably

NETWORK_FILE = Path("/run/systemd/network/10-dicom-gateway.network")
TIMESYNCD_FILE = Path("/run/systemd/timesyncd.conf.d/dicom-gateway.conf")
HOSTNAME_FILE = Path("/data/system/hostname")
SYSTEM_DIR = Path("/data/system")
APPLIED_FILE = SYSTEM_DIR / "network.toml"
PENDING_FILE = SYSTEM_DIR / "network.pending.toml"
MAX_NETWORK_BYTES = 16 * 1024
LOOPBACK_NTP = "127.0.0.1"  # a fallback that never leaves the box (see the module docstring)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
HOSTNAME_MAX = 63  # systemd: HOST_NAME_MAX (64) less the terminating NUL
DOMAIN_RE = re.compile(rf"^~?{_LABEL}(?:\.{_LABEL})*\.?$")  # "~" makes a routing-only domain
LINK_GLOB_RE = re.compile(r"^[A-Za-z0-9*?_.:-]{1,15}$")  # IFNAMSIZ-1; globs as networkd takes


def valid_hostname(value: str) -> bool:
    """Whether ``value`` is a host name by the rule above (first boot checks the stored one)."""
    return len(value) <= HOSTNAME_MAX and HOSTNAME_RE.match(value) is not None


def _check_hostname(value: str) -> str:
    if not valid_hostname(value):
        raise ValueError(
            "a host name is letters, digits and '-' (labels separated by '.', none starting or "
            f"ending with '-'), at most {HOSTNAME_MAX} characters"
        )
    return value


def _check_host(value: str) -> str:
    """An NTP server: an address or a DNS name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > 253 or not DOMAIN_RE.match(value) or value.startswith("~"):
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return value


def _usable_host(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, what: str) -> None:
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        raise ValueError(f"{ip} cannot be the box's {what} (loopback, multicast, link-local)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InterfaceSettings(_Strict):
    """[interface]: how the box's wired link gets its address."""

    name: list[str] = Field(
        default_factory=lambda: ["en*", "eth*"],
        min_length=1,
        max_length=8,
        description="Link names or globs the settings apply to (networkd's [Match] Name=); "
        "with a static address name the one link (e.g. eth0).",
    )
    mode: Literal["dhcp", "static"] = Field(
        "dhcp", description="dhcp: address, gateway, DNS and NTP from the network; static: below."
    )
    address: str | None = Field(
        None, description="Static address with prefix (CIDR), e.g. 192.0.2.10/24; static only."
    )
    gateway: str | None = Field(
        None, description="Default gateway, in the address's subnet; static only, optional."
    )
    dns: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="DNS server addresses (with DHCP: in addition to the lease's).",
    )
    domains: list[str] = Field(
        default_factory=list, max_length=8, description="DNS search domains."
    )
    ipv6_slaac: bool = Field(
        False,
        description="Accept IPv6 router advertisements (SLAAC addresses and routes); off keeps "
        "the box's addresses those above (IPv6 link-local stays).",
    )

    @field_validator("name")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not LINK_GLOB_RE.match(value):
                raise ValueError(
                    f"{value!r} is not a link name or glob (at most 15 of A-Z0-9*?_.:-)"
                )
        return values

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "/" not in value:
            raise ValueError(f"write the address with its prefix, e.g. {value}/24")
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an address with a prefix (CIDR)") from None
        _usable_host(iface.ip, "address")
        net = iface.network
        if net.num_addresses > 2 and iface.ip == net.network_address:
            raise ValueError(f"{iface.ip} is the network address of {net}, not a host in it")
        if (
            isinstance(net, ipaddress.IPv4Network)
            and net.num_addresses > 2
            and iface.ip == net.broadcast_address
        ):
            raise ValueError(f"{iface.ip} is the broadcast address of {net}, not a host in it")
        return str(iface)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        _usable_host(ip, "gateway")
        return str(ip)

    @field_validator("dns")
    @classmethod
    def _dns(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address (DNS servers are addresses)"
                ) from None
            if ip.is_unspecified or ip.is_multicast:
                raise ValueError(f"{ip} cannot be a DNS server")
            out.append(str(ip))
        return out

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        for value in values:
            if len(value) > 253 or not DOMAIN_RE.match(value):
                raise ValueError(f"{value!r} is not a DNS domain")
        return values

    @model_validator(mode="after")
    def _mode(self) -> InterfaceSettings:
        problems = mode_problems(self.mode, self.address, self.gateway)
        if problems:
            raise ValueError(problems[0][1])
        return self


def mode_problems(mode: str, address: str | None, gateway: str | None) -> list[tuple[str, str]]:
    """What is wrong with mode, address and gateway *together*, as (key, message): the rules
    of [interface] across its keys (each key already valid alone). The model refuses with the
    first; the panel names the input each belongs to."""
    if mode == "dhcp":
        return [
            (key, f'{key} is only for mode = "static" (DHCP assigns it)')
            for key, value in (("address", address), ("gateway", gateway))
            if value is not None
        ]
    if address is None:
        return [("address", 'mode = "static" needs address (e.g. "192.0.2.10/24")')]
    if gateway is None:
        return []
    iface = ipaddress.ip_interface(address)
    gw = ipaddress.ip_address(gateway)
    if gw.version != iface.version:
        return [("gateway", f"gateway {gw} is not of the address's IP version")]
    if gw == iface.ip:
        return [("gateway", f"gateway {gw} is the box's own address")]
    if gw not in iface.network:
        return [("gateway", f"gateway {gw} is not in the address's subnet {iface.network}")]
    return []


class TimeSettings(_Strict):
    """[time]: where the clock comes from (the Pi has no battery-backed clock)."""

    ntp: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="NTP servers (names or addresses); with DHCP, the lease's are used too. "
        "None and none from DHCP: the clock is not synced, the panel says so.",
    )

    @field_validator("ntp")
    @classmethod
    def _ntp(cls, values: list[str]) -> list[str]:
        return [_check_host(v) for v in values]


class NetworkSettings(_Strict):
    """The whole network.toml."""

    hostname: str | None = Field(
        None, description="Host name; absent: the one first boot gave the box (its serial)."
    )
    interface: InterfaceSettings = Field(
        default_factory=InterfaceSettings, description="[interface]"
    )
    time: TimeSettings = Field(default_factory=TimeSettings, description="[time]")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostname(value)


def default_network() -> NetworkSettings:
    """No network.toml: DHCP on every ``en*``/``eth*`` link, NTP from the lease."""
    return NetworkSettings()


def parse_network(text: str, label: str = "network.toml") -> NetworkSettings:
    """Validate the text of a network.toml; ConfigError names each problem's key and line."""
    if len(text.encode()) > MAX_NETWORK_BYTES:
        raise ConfigError([f"{label}: larger than {MAX_NETWORK_BYTES} bytes"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: TOML syntax error: {exc}"]) from None
    return _validate(data, text, label)


def load_network(path: Path) -> NetworkSettings:
    """Read and validate a network.toml file (first boot's import, the boot render)."""
    data, text = read_toml(Path(path), "network file")
    return _validate(data, text, Path(path).name)


def _validate(data: dict[str, Any], text: str, label: str) -> NetworkSettings:
    try:
        return NetworkSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, locator(text, label))) from None


def to_toml(settings: NetworkSettings) -> str:
    """The settings as network.toml text (what the panel stores); round-trips through parse."""
    data = settings.model_dump(exclude_none=True)
    return dumps(data)


# --- rendering -----------------------------------------------------------------------------------

_HEADER = (
    "# Written by dicom-gateway from /data/system/network.toml at every boot and every change;\n"
    "# change the settings in the panel (Network and time), not here.\n"
)


def render(settings: NetworkSettings, default_hostname: str | None = None) -> dict[Path, str]:
    """The files systemd reads, by absolute path: networkd's .network, timesyncd's drop-in and
    the hostname file (the settings' name, else ``default_hostname``; neither: not written)."""
    files = {
        NETWORK_FILE: render_network(settings.interface),
        TIMESYNCD_FILE: render_timesyncd(settings.time),
    }
    hostname = settings.hostname or default_hostname
    if hostname is not None:
        files[HOSTNAME_FILE] = hostname + "\n"
    return files


def render_network(iface: InterfaceSettings) -> str:
    """systemd.network(5) text for ``iface``."""
    network = [f"DHCP={'ipv4' if iface.mode == 'dhcp' else 'no'}"]
    if iface.address is not None:
        network.append(f"Address={iface.address}")
    if iface.gateway is not None:
        network.append(f"Gateway={iface.gateway}")
    network += [f"DNS={dns}" for dns in iface.dns]
    if iface.domains:
        network.append("Domains=" + " ".join(iface.domains))
    network.append(f"IPv6AcceptRA={'yes' if iface.ipv6_slaac else 'no'}")
    # IPv6 link-local stays: mDNS (the panel's .local name) and neighbour discovery use it.
    network.append("LinkLocalAddressing=ipv6")
    sections = [
        ("Match", ["Name=" + " ".join(iface.name)]),
        # The box is only reachable when this link is: network-online.target waits for it.
        ("Link", ["RequiredForOnline=yes"]),
        ("Network", network),
    ]
    if iface.mode == "dhcp":
        # The box keeps its own name (mDNS, the certificate) whatever the DHCP server suggests;
        # the MAC as client id, which is what hospital DHCP reservations are made on.
        sections.append(
            ("DHCPv4", ["UseHostname=no", "UseDNS=yes", "UseNTP=yes", "ClientIdentifier=mac"])
        )
    return _HEADER + "".join(_section(name, lines) for name, lines in sections)


def render_timesyncd(time: TimeSettings) -> str:
    """timesyncd.conf(5) drop-in text for ``time``."""
    servers = " ".join(time.ntp)
    fallback = servers or LOOPBACK_NTP
    lines = [
        f"NTP={servers}",
        # Not empty: systemd 252 then uses its compiled-in internet pool (module docstring).
        f"FallbackNTP={fallback}",
    ]
    return _HEADER + _section("Time", lines)


def _section(name: str, lines: list[str]) -> str:
    return f"\n[{name}]\n" + "".join(line + "\n" for line in lines)


def write_rendered(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """Write each rendered file under ``root`` durably (0644), making its directory; the paths
    written."""
    written = []
    for path, text in files.items():
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_bytes_durably(target, text.encode(), 0o644)
        written.append(target)
    return written


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``dicom-gateway appliance network ...`` (the verbs live in gateway.appliance.netcli)."""
    from gateway.appliance.netcli import register

    register(subparsers)
