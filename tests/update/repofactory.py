"""Test helper: a TUF release repository holding fake releases, and a 127.0.0.1 server for it.

``build_repo(tmp_path, [FakeRelease("1.0.0"), FakeRelease("1.1.0")])`` makes a real repository
with gateway.update.repo (same layout, keys and signatures as production) whose bundles are
small: the folder ``dicom-gateway-<version>/`` holds ``bin/dicom-gateway`` (a shell script),
``pyvenv.cfg``, ``lib/`` with a marker file, a relative link ``lib64 -> lib`` (as a real venv
has) and ``RELEASE.json``. The default script answers ``--version`` with
``dicom-gateway <version>`` and otherwise runs ``python -m gateway`` of this source tree, so a
fake release can run the real daemon; pass ``script=`` to make one that misbehaves.

``serve_repo(path)`` serves a folder over HTTP on 127.0.0.1 (threaded, with Range requests),
records every request, and can drop a download after N bytes once (``server.cut_after``).
"""

from __future__ import annotations

import platform
import re
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.clock import FakeClock
from gateway.update.bundle import ReleaseInfo, bundle_folder, write_tarball
from gateway.update.repo import KeyRing, ReleaseFields, TufRepository, target_name

TREE = Path(__file__).resolve().parents[2]
HOST_ARCH = platform.machine() if platform.machine() in ("aarch64", "x86_64") else "x86_64"


def default_script(version: str) -> str:
    """The fake release's bin/dicom-gateway: reports its version, else runs this tree's CLI."""
    return (
        "#!/bin/sh\n"
        f"# fake dicom-gateway release {version}\n"
        f'if [ "$1" = "--version" ]; then echo "dicom-gateway {version}"; exit 0; fi\n'
        f'PYTHONPATH="{TREE}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'export PYTHONPATH\nexec "{sys.executable}" -m gateway "$@"\n'
    )


@dataclass(frozen=True)
class FakeRelease:
    """One fake release to publish: its signed fields and what its bin/dicom-gateway does."""

    version: str
    arch: str = HOST_ARCH
    hardware: tuple[str, ...] = ("rpi4", "rpi5", "generic")
    min_from: str = "0"
    channel: str = "stable"
    rollout: int = 100
    script: str | None = None  # None: default_script(version)
    # More files in the release folder: (relative path, bytes, mode), e.g. a real ELF library.
    files: tuple[tuple[str, bytes, int], ...] = ()

    def fields(self) -> ReleaseFields:
        """The signed custom fields."""
        return ReleaseFields(
            self.version, self.arch, self.hardware, self.min_from, self.channel, self.rollout
        )


def make_fake_bundle(release: FakeRelease, out_dir: Path) -> Path:
    """Write the fake release's tarball into ``out_dir``; its path."""
    stage = out_dir / f"stage-{release.version}-{release.arch}"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "bin").mkdir(parents=True)
    (stage / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (stage / "lib" / "python3.11" / "site-packages" / "FAKE_RELEASE").write_text(
        release.version + "\n"
    )
    (stage / "lib64").symlink_to("lib")
    (stage / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).parent}\n")
    script = stage / "bin" / "dicom-gateway"
    script.write_text(
        release.script if release.script is not None else default_script(release.version)
    )
    script.chmod(0o755)
    for name, data, mode in release.files:
        extra = stage / name
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_bytes(data)
        extra.chmod(mode)
    info = ReleaseInfo(
        version=release.version,
        arch=release.arch,
        built_at="2024-01-01T00:00:00Z",
        python=platform.python_version(),
        dependencies={"dicom-edge-gateway": release.version},
    )
    (stage / "RELEASE.json").write_bytes(info.to_json())
    out = out_dir / target_name(release.version, release.arch)
    write_tarball(stage, bundle_folder(release.version), out)
    shutil.rmtree(stage)
    return out


@dataclass
class RepoFixture:
    """A built repository: where it is, its keys, and the bundles published (by target name)."""

    path: Path
    keys_dir: Path
    repo: TufRepository
    clock: FakeClock
    bundles: dict[str, Path] = field(default_factory=dict)

    @property
    def metadata_dir(self) -> Path:
        """REPO/metadata (the client's metadata base)."""
        return self.repo.metadata_dir

    @property
    def targets_dir(self) -> Path:
        """REPO/targets (the client's target base)."""
        return self.repo.targets_dir

    @property
    def root_bytes(self) -> bytes:
        """The newest root.json: the trust anchor a client starts from."""
        return self.repo.root_bytes()

    def keys(self) -> KeyRing:
        """All keys of the repository (tests keep them together)."""
        return KeyRing.load(self.keys_dir)

    def publish(self, release: FakeRelease) -> Path:
        """Build and publish one more fake release; its bundle path."""
        bundle = make_fake_bundle(release, self.path.parent / "bundles")
        self.repo.add_target(bundle, release.fields(), self.keys())
        self.bundles[target_name(release.version, release.arch)] = bundle
        return bundle

    def hosted_bundle(self, name: str) -> Path:
        """The hash-prefixed copy of target ``name`` inside REPO/targets (to tamper with)."""
        info = self.repo.targets().signed.targets[name]
        return self.targets_dir / f"{info.hashes['sha256']}.{name}"


def build_repo(
    tmp: Path, releases: Sequence[FakeRelease] = (), clock: FakeClock | None = None
) -> RepoFixture:
    """A repository in ``tmp/repo`` (keys in ``tmp/keys``) with ``releases`` published in order.

    Metadata expiry follows ``clock`` (a FakeClock at the real time by default, so a client
    using the system clock accepts it; advance it or pass another to make expired metadata).
    """
    import time

    clock = clock or FakeClock(start=time.time())
    (tmp / "bundles").mkdir(parents=True, exist_ok=True)
    repo = TufRepository.init(tmp / "repo", tmp / "keys", clock)
    fixture = RepoFixture(tmp / "repo", tmp / "keys", repo, clock)
    for release in releases:
        fixture.publish(release)
    return fixture


# -- a static server with Range, for the client's downloads ------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class RepoServer:
    """A running server: its base URL, what was asked of it, and a one-shot fault."""

    root: Path
    base_url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    cut_after: int | None = None  # drop the next file body after this many bytes, once
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def metadata_url(self) -> str:
        """Base URL of REPO/metadata/."""
        return f"{self.base_url}/metadata/"

    @property
    def targets_url(self) -> str:
        """Base URL of REPO/targets/."""
        return f"{self.base_url}/targets/"

    def take_cut(self) -> int | None:
        """The pending cut, cleared (a cut happens once)."""
        with self.lock:
            cut, self.cut_after = self.cut_after, None
            return cut


def _handler(state: RepoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the requests list is the log

        def do_GET(self) -> None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            header = self.headers.get("Range")
            with state.lock:
                state.requests.append((rel, header))
            path = (state.root / rel).resolve()
            if not path.is_relative_to(state.root.resolve()) or not path.is_file():
                self._send_empty(HTTPStatus.NOT_FOUND)
                return
            data = path.read_bytes()
            start, end = 0, len(data) - 1
            status = HTTPStatus.OK
            if header is not None:
                match = _RANGE.match(header.strip())
                if match is None or int(match.group(1)) >= len(data):
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(match.group(1))
                if match.group(2):
                    end = min(end, int(match.group(2)))
                status = HTTPStatus.PARTIAL_CONTENT
            body = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            cut = state.take_cut() if rel.startswith("targets/") else None
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the client sees a short body, then EOF
                return
            self.wfile.write(body)

        def _send_empty(self, status: HTTPStatus) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve_repo(root: Path) -> Iterator[RepoServer]:
    """Serve ``root`` on 127.0.0.1 (a port picked by the kernel) until the block ends."""
    state = RepoServer(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="repo-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
