"""First boot, and every boot after it: the box's identity, its files from the card, its console.

The steps, in order (``once``: a marker in ``/data/system/firstboot/`` once done, see
gateway.appliance.steps for the rules; the others look at the box and converge every boot):

===================  =====  ====================================================================
step                 once   what
===================  =====  ====================================================================
grow-data            yes    partition 4 grown to fill the card, ext4 grown online (partition)
machine-id           yes    systemd's transient /etc/machine-id kept in /data/system/machine-id
serial               yes    the device serial (gateway.appliance.serial) in /data/system/serial
default-config       no     /etc/dicom-gateway/gateway.toml: the image's all-defaults file
                            (/usr/share/dicom-gateway/gateway.toml), if there is none
import-config        no     dicom-gateway.toml from the card (gateway.appliance.fatimport)
import-network       no     network.toml from the card to /data/system/network.toml
hostname             no     /data/system/hostname: network.toml's name, else the stored one,
                            else dicom-gateway-<serial>; the running kernel's name set to it
panel-certificate    yes    the panel's self-signed certificate for hostname, hostname.local
setup-token          no     the token (the panel's own store) in SETUP-TOKEN.txt; removed once
                            the panel is set up
avahi                no     /run/dicom-gateway/avahi.service (port from [web])
ssh                  no     says whether SSH is on: ssh/authorized_keys on the card turns it on
                            (the image's ssh.service.d condition; sshd reads the card's keys)
===================  =====  ====================================================================

Early, from the unit that renders the network settings (:func:`run_early`, before
systemd-networkd and timesyncd, in sysinit): ``serial`` and ``import-network`` only, so that
network.toml from the card and the serial's default host name are there when the network is
set up. The same steps again in the full run converge (``serial`` is done; the import finds the
same file installed and reports it). The full run is an ordinary service after sysinit: nothing
in sysinit may wait for it (an ordering cycle, which systemd breaks by dropping a job).

Then, every boot (:func:`finish`): FIRSTBOOT-REPORT.txt on the card (when a card file was
imported or refused, or a step needs a person), then the imported card files renamed
``*.imported`` (after the report, so a cut between reports them again), the dashboard's
``<state_dir>/firstboot-report.json``, the console text in ``/run/dicom-gateway/issue``
(the image links ``/etc/issue.d/50-dicom-gateway.issue`` to it: agetty reads /etc/issue.d, and
ignores /run/issue.d while Debian's /etc/issue exists) and a print on ``/dev/console``.
"""

from __future__ import annotations

import datetime
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway import __version__
from gateway.appliance import avahi, console, fatimport, network, partition, serial
from gateway.appliance.commands import Runner
from gateway.appliance.files import (
    ROOT_OWNER,
    SERVICE_USER,
    Owner,
    ensure_dir,
    lookup_owner,
    own_tree,
    remove_file,
    sweep_temporaries,
    under,
    write_file,
)
from gateway.appliance.steps import (
    NEEDS_A_PERSON,
    Step,
    StepRecord,
    StepResult,
    StepStatus,
    run_steps,
)
from gateway.appliance.timesync import read_clock_status
from gateway.clock import Clock
from gateway.config import ConfigError, GatewayConfig, load_config

SYSTEM_DIR = "/data/system"
MARKERS = "/data/system/firstboot"
CONFIG_FILE = "/etc/dicom-gateway/gateway.toml"
IMAGE_DEFAULT_CONFIG = "/usr/share/dicom-gateway/gateway.toml"  # shipped by the image
MACHINE_ID = "/etc/machine-id"
# Only where the image ships no default file (a root made by hand): the same thing, every default.
DEFAULT_CONFIG_TEXT = (
    "# dicom-gateway configuration, written by first boot: every key has its default.\n"
    "# Change it in the web panel (Configuration), or put a dicom-gateway.toml on the card's\n"
    "# FAT partition: it is checked and imported at the next boot.\n"
)


class Host:
    """The running kernel's host name; a fake root gets :class:`NoHost`."""

    def hostname(self) -> str:
        return socket.gethostname()

    def set_hostname(self, name: str) -> None:
        socket.sethostname(name)


class NoHost(Host):
    """For a root that is not the running system: its host name is not ours to change."""

    def __init__(self) -> None:
        self._name = ""

    def hostname(self) -> str:
        return self._name

    def set_hostname(self, name: str) -> None:
        self._name = name


@dataclass
class Firstboot:
    """What the steps work on: the root, the card, the commands, the clock."""

    root: Path
    boot: Path  # the FAT partition as mounted (normally <root>/boot/firmware)
    runner: Runner
    clock: Clock
    host: Host = field(default_factory=NoHost)
    random_hex: Callable[[int], str] = secrets.token_hex
    version: str = __version__
    imports: list[fatimport.ImportOutcome] = field(default_factory=list)

    def path(self, box_path: str) -> Path:
        return under(self.root, box_path)

    @property
    def service_owner(self) -> Owner | None:
        return lookup_owner(self.root, SERVICE_USER, SERVICE_USER)

    @property
    def config_owner(self) -> Owner | None:
        owner = self.service_owner
        return None if owner is None else Owner(ROOT_OWNER.uid, owner.gid)

    def config(self) -> GatewayConfig:
        """The installed configuration, or the defaults when it is missing or broken."""
        try:
            return load_config(self.path(CONFIG_FILE))
        except ConfigError:
            return GatewayConfig()

    def state_dir(self) -> Path:
        return under(self.root, str(self.config().gateway.state_dir))

    def serial(self) -> str:
        return serial.stored_value(self.path(serial.SERIAL_FILE), serial.SERIAL_RE) or "unknown"

    def network_hostname(self) -> str | None:
        """The host name the installed network.toml sets, if it sets one and is valid."""
        path = self.path(str(network.APPLIED_FILE))
        if not path.is_file():
            return None
        try:
            return network.load_network(path).hostname
        except ConfigError:
            return None  # the boot render falls back to DHCP and the stored name as well

    def stored_hostname(self) -> str | None:
        """The name in /data/system/hostname, if it is one systemd would take."""
        stored = serial.stored_value(self.path(serial.HOSTNAME_FILE), serial.ANY_LINE_RE)
        return stored if stored is not None and network.valid_hostname(stored) else None

    def hostname(self) -> str:
        """network.toml's name, else the stored one, else ``dicom-gateway-<serial>``."""
        return (
            self.network_hostname()
            or self.stored_hostname()
            or serial.default_hostname(self.serial())
        )


def step_grow(fb: Firstboot) -> StepResult:
    """Grow partition 4 and its filesystem (converges: gateway.appliance.partition).

    Nothing mounted at /data: ATTENTION (no marker; the unit's condition normally keeps first
    boot from running at all then). Something that is not a partition (a tmpfs, a whole disk):
    nothing to grow, done.
    """
    mount = partition.find_data_mount(fb.root)
    if not mount.mounted:
        return StepResult(StepStatus.ATTENTION, f"nothing is mounted at {partition.DATA_MOUNT}")
    part = mount.partition
    if part is None:
        return StepResult(StepStatus.UNCHANGED, f"{partition.DATA_MOUNT} is not a partition")
    backup = fb.path(MARKERS) / "partition-table.before"
    ensure_dir(backup.parent, 0o755)
    done = partition.grow_data_partition(fb.runner, part, backup)
    status = StepStatus.DONE if done.table_written else StepStatus.UNCHANGED
    return StepResult(status, done.plan.reason)


def step_machine_id(fb: Firstboot) -> StepResult:
    """Copy the transient machine-id; a re-run finds the durable copy or writes it again."""
    kept = fb.path(serial.MACHINE_ID_FILE)
    if serial.stored_value(kept, serial.MACHINE_ID_RE):
        return StepResult(StepStatus.UNCHANGED, "machine-id already kept")
    current = serial.stored_value(fb.path(MACHINE_ID), serial.MACHINE_ID_RE)
    if current is None:
        return StepResult(StepStatus.ATTENTION, f"{MACHINE_ID} holds no machine-id yet")
    ensure_dir(kept.parent, 0o755)
    write_file(kept, f"{current}\n".encode(), 0o444)
    return StepResult(StepStatus.DONE, f"machine-id kept in {serial.MACHINE_ID_FILE}")


def step_serial(fb: Firstboot) -> StepResult:
    """Store the serial once; a damaged or missing file is derived again (same sources)."""
    path = fb.path(serial.SERIAL_FILE)
    if serial.stored_value(path, serial.SERIAL_RE):
        return StepResult(StepStatus.UNCHANGED, f"serial {fb.serial()}")
    value = serial.detect_serial(fb.root, fb.random_hex)
    ensure_dir(path.parent, 0o755)
    write_file(path, f"{value}\n".encode(), 0o644)
    return StepResult(StepStatus.DONE, f"serial {value}")


def step_default_config(fb: Firstboot) -> StepResult:
    """Install the image's all-defaults configuration where there is none (atomic: a cut
    leaves no file, and the next run installs it)."""
    path = fb.path(CONFIG_FILE)
    if path.exists():
        return StepResult(StepStatus.UNCHANGED, "configuration present")
    shipped = fb.path(IMAGE_DEFAULT_CONFIG)
    data = shipped.read_bytes() if shipped.is_file() else DEFAULT_CONFIG_TEXT.encode()
    write_file(path, data, fatimport.CONFIG_MODE, fb.config_owner)
    return StepResult(StepStatus.DONE, "default configuration installed")


def _import_result(outcome: fatimport.ImportOutcome) -> StepResult:
    if outcome.status is fatimport.ImportStatus.REFUSED:
        return StepResult(StepStatus.ATTENTION, outcome.detail, outcome.problems)
    if outcome.status is fatimport.ImportStatus.ABSENT:
        return StepResult(StepStatus.UNCHANGED, outcome.detail)
    return StepResult(StepStatus.DONE, outcome.detail)


def step_import_config(fb: Firstboot) -> StepResult:
    outcome = fatimport.import_config(
        fb.boot / fatimport.CONFIG_NAME,
        fb.path(CONFIG_FILE),
        fb.state_dir(),
        fb.clock,
        fb.config_owner,
        fb.service_owner,
    )
    fb.imports.append(outcome)
    return _import_result(outcome)


def step_import_network(fb: Firstboot) -> StepResult:
    outcome = fatimport.import_network(
        fb.boot / fatimport.NETWORK_NAME,
        fb.path(str(network.APPLIED_FILE)),
        network.load_network,
    )
    fb.imports.append(outcome)
    return _import_result(outcome)


def step_hostname(fb: Firstboot) -> StepResult:
    """Store the name (:meth:`Firstboot.hostname`: the one the network settings' render writes
    too) and give it to the running kernel, before networkd and Avahi start."""
    name = fb.hostname()
    wrote = write_file(fb.path(serial.HOSTNAME_FILE), f"{name}\n".encode(), 0o644)
    if fb.host.hostname() != name:
        fb.host.set_hostname(name)
    return StepResult(StepStatus.DONE if wrote else StepStatus.UNCHANGED, f"host name {name}")


def step_certificate(fb: Firstboot) -> StepResult:
    """The panel's self-signed pair; a pair cut half-way is made again (key first, then cert)."""
    from gateway.web.tlscert import (
        cert_paths,
        generate_self_signed,
        local_names_and_addresses,
        pair_matches,
    )

    config = fb.config()
    if config.web.cert is not None:
        return StepResult(StepStatus.UNCHANGED, "the configuration names its own certificate")
    state = fb.state_dir()
    cert, key = cert_paths(state)
    sweep_temporaries(cert.parent)  # a cut during an earlier run's key or certificate write
    if pair_matches(cert, key):
        own_tree(cert.parent, fb.service_owner)
        return StepResult(StepStatus.UNCHANGED, "panel certificate present")
    name = fb.hostname()
    _, addresses = local_names_and_addresses(config.web.bind)
    now = datetime.datetime.fromtimestamp(fb.clock.now(), datetime.UTC)
    generate_self_signed(cert, key, [name, f"{name}.local"], addresses, now)
    own_tree(cert.parent, fb.service_owner)
    return StepResult(StepStatus.DONE, f"panel certificate for {name}, {name}.local")


def step_setup_token(fb: Firstboot) -> StepResult:
    """The daemon's own token store; the card's copy follows it (removed once set up)."""
    from argon2 import PasswordHasher

    from gateway.web.auth.db import PanelDb, web_dir
    from gateway.web.auth.setup import SetupToken
    from gateway.web.auth.users import UserStore

    # First boot only counts the accounts; UserStore hashes a dummy password when it is made,
    # which with the panel's own argon2 cost takes a second on a Pi for nothing.
    count_only = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

    config = fb.config()
    card = fb.boot / console.TOKEN_FILE
    if not config.web.enabled:
        remove_file(card)
        return StepResult(StepStatus.UNCHANGED, "the panel is disabled")
    state = fb.state_dir()
    sweep_temporaries(web_dir(state))  # a cut during an earlier run's token write
    db = PanelDb.under(state)
    users = UserStore(db, fb.clock, count_only)
    token = SetupToken(db, state, users, fb.clock).ensure()
    own_tree(web_dir(state), fb.service_owner)
    if token is None:
        removed = remove_file(card)
        return StepResult(
            StepStatus.DONE if removed else StepStatus.UNCHANGED,
            "the panel is set up" + (f": {console.TOKEN_FILE} removed" if removed else ""),
        )
    text = console.token_file_text(token, fb.hostname(), config.web.port)
    written = write_file(card, text.encode("utf-8"), None)
    return StepResult(
        StepStatus.DONE if written else StepStatus.UNCHANGED,
        f"setup token in {console.TOKEN_FILE} and on the console",
    )


def step_avahi(fb: Firstboot) -> StepResult:
    path = fb.path(avahi.AVAHI_FILE)
    ensure_dir(path.parent, 0o755)
    xml = avahi.service_xml(fb.config().web.port, fb.serial(), fb.version)
    written = write_file(path, xml.encode("utf-8"), 0o644)
    return StepResult(StepStatus.DONE if written else StepStatus.UNCHANGED, "mDNS _https._tcp")


CARD_SSH_KEYS = "ssh/authorized_keys"  # on the card; the image's sshd reads it there


def step_ssh(fb: Firstboot) -> StepResult:
    """Say whether SSH is on. The image decides it, not this step: ssh.service starts only with
    ssh/authorized_keys on the card (ConditionPathExists) and sshd takes keys from that file
    alone, no passwords (image-build/rootfs/etc/ssh). One rule, one place: nothing is copied."""
    card = fb.boot / CARD_SSH_KEYS
    if not card.is_file():
        return StepResult(StepStatus.UNCHANGED, f"SSH off (no {CARD_SSH_KEYS} on the card)")
    keys = [
        line
        for line in card.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        return StepResult(
            StepStatus.ATTENTION, f"SSH on, but {CARD_SSH_KEYS} on the card holds no key"
        )
    return StepResult(
        StepStatus.UNCHANGED,
        f"SSH on for root with the {len(keys)} key(s) in {CARD_SSH_KEYS} (no passwords)",
    )


STEPS: tuple[Step[Firstboot], ...] = (
    Step("grow-data", True, step_grow),
    Step("machine-id", True, step_machine_id),
    Step("serial", True, step_serial),
    Step("default-config", False, step_default_config),
    Step("import-config", False, step_import_config),
    Step("import-network", False, step_import_network),
    Step("hostname", False, step_hostname),
    Step("panel-certificate", True, step_certificate),
    Step("setup-token", False, step_setup_token),
    Step("avahi", False, step_avahi),
    Step("ssh", False, step_ssh),
)


EARLY = ("serial", "import-network")
EARLY_STEPS: tuple[Step[Firstboot], ...] = tuple(s for s in STEPS if s.name in EARLY)


def problems_of(records: list[StepRecord]) -> list[str]:
    """One line per step that needs a person: the console's, the report's and the panel's."""
    return [
        f"{r.name}: {r.result.summary}"
        + (f" ({'; '.join(r.result.details)})" if r.result.details else "")
        for r in records
        if r.result.status in NEEDS_A_PERSON
    ]


def finish(fb: Firstboot, records: list[StepRecord]) -> None:
    """The reports (card, panel), the card files retired, and the console text.

    The order matters for a cut: the card's report is durable before an imported file is
    renamed, so an import is always reported (a cut between: the next boot imports the same
    file again, finds it installed, and reports it again).
    """
    from gateway.web.auth.setup import read_token

    problems = problems_of(records)
    markers = fb.path(MARKERS)
    ensure_dir(markers, 0o755)
    card_lines = fatimport.report_lines(fb.imports, markers)
    other = [p for p in problems if not p.startswith(("import-config:", "import-network:"))]
    if other:
        card_lines += ["Needs attention:", *(f"  {p}" for p in other), ""]
    if any(o.status is not fatimport.ImportStatus.ABSENT for o in fb.imports) or other:
        when = datetime.datetime.fromtimestamp(fb.clock.now(), datetime.UTC)
        text = console.report_text(when.strftime("%Y-%m-%d %H:%M UTC (box clock)"), card_lines)
        write_file(fb.boot / console.REPORT_FILE, text.encode("utf-8"), None)
    for outcome in fb.imports:
        fatimport.retire(outcome)
    state = fb.state_dir()
    if state.is_dir():
        fatimport.write_panel_report(state, problems, fb.config_owner)
    config = fb.config()
    token = read_token(state) if config.web.enabled else None
    clock = read_clock_status(fb.root)
    issue = fb.path(console.ISSUE_FILE)
    ensure_dir(issue.parent, 0o755)
    text = console.issue_text(
        fb.hostname(), config.web.port, token, problems, clock.text if clock.problem else None
    )
    write_file(issue, text.encode("utf-8"), 0o644)
    console.write_console(
        fb.path(console.CONSOLE),
        console.console_text(fb.hostname(), config.web.port, [], token, problems),
    )


def run(fb: Firstboot) -> list[StepRecord]:
    """Every step, then the reports and the console; the records for the CLI's report."""
    records = run_steps(STEPS, fb, fb.path(MARKERS))
    finish(fb, records)
    return records


def run_early(fb: Firstboot) -> list[StepRecord]:
    """The steps the network render needs (:data:`EARLY_STEPS`), without reports: the full run
    later reports them with the others and retires the card's files."""
    return run_steps(EARLY_STEPS, fb, fb.path(MARKERS))
