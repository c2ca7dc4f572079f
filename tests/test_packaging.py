"""What comes before the demo's first line: the build and `make demo`'s install (issue 11, 10)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

TREE = Path(__file__).resolve().parent.parent

# Stands in for python3 in the Makefile: `-c` (the venv check) passes, `-m venv DIR` makes a
# virtualenv whose pip talks as much as the real one and whose dicom-gateway says it ran.
FAKE_PYTHON = """\
#!/bin/sh
case "$1" in
  -c) exit 0 ;;
  -m) mkdir -p "$3/bin"
      cat > "$3/bin/pip" <<'EOF'
#!/bin/sh
i=0; while [ $i -lt 100 ]; do echo "pip noise $i"; i=$((i+1)); done
echo "pip: one more warning" >&2
exit ${PIP_EXIT:-0}
EOF
      printf '#!/bin/sh\\necho "demo ran: $*"\\n' > "$3/bin/dicom-gateway"
      chmod +x "$3/bin/pip" "$3/bin/dicom-gateway" ;;
esac
"""


def make_demo(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(folder), "demo", f"PYTHON={folder / 'py'}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(TREE / name, tmp_path / name)
    fake = tmp_path / "py"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return tmp_path


def test_make_demo_keeps_pip_quiet_and_says_where_its_log_is(checkout: Path) -> None:
    first = make_demo(checkout)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pip noise" not in first.stdout + first.stderr
    assert first.stdout.splitlines() == [
        "setting up .venv (the first time takes a few minutes; pip's output: .venv/install.log)",
        ".venv/bin/dicom-gateway demo ",
        "demo ran: demo",
    ]
    assert "pip noise 99" in (checkout / ".venv" / "install.log").read_text()
    # Already installed: nothing before the demo but the command make runs.
    again = make_demo(checkout)
    assert again.stdout.splitlines() == [".venv/bin/dicom-gateway demo ", "demo ran: demo"]
    assert again.stderr == ""


def test_make_demo_shows_the_end_of_pips_log_when_pip_fails(checkout: Path) -> None:
    failed = make_demo(checkout, PIP_EXIT="1")
    assert failed.returncode != 0
    assert "pip: one more warning" in failed.stderr
    assert "pip failed; the whole log: .venv/install.log" in failed.stderr
    assert "demo ran" not in failed.stdout
    assert not (checkout / ".venv" / "bin" / ".installed").exists()  # the next make tries again


def test_the_build_prints_no_warning_and_declares_the_licence_as_spdx(tmp_path: Path) -> None:
    project = tomllib.loads((TREE / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["license"] == "LicenseRef-Proprietary"
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(TREE / "pyproject.toml", source)
    shutil.copy(TREE / "README.md", source)
    shutil.copytree(
        TREE / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "w"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "BuildBackendWarning" not in built.stdout + built.stderr
    assert "deprecated" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "w").glob("dicom_edge_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: LicenseRef-Proprietary" in archive.read(metadata).decode()
