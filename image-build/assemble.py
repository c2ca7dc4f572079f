"""Assemble the disk image from staged trees, without loop mounts (run as root on the host).

    python3 image-build/assemble.py --version V --variant qemu --boot DIR --root DIR \
        --data DIR --out IMG [--epoch SOURCE_DATE_EPOCH]

Each file system is made in its own file (``mkfs.vfat`` + ``mcopy`` for the FAT, ``mkfs.ext4
-d`` for root and data), the table is written with ``sfdisk`` and the file systems are copied
into place with ``dd``. The table and identifiers come from layout.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import layout


def run(cmd: list[str], env: dict[str, str] | None = None, **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, **kw)  # type: ignore[call-overload]


def clamp_mtimes(tree: Path, epoch: int) -> None:
    """No file newer than the commit: the same tree gives the same file system."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if path.lstat().st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def make_fat(boot: Path, out: Path, size: int, volid: str, label: str, epoch: int) -> None:
    """A FAT32 file system holding ``boot``'s files, added in sorted order."""
    out.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-n", label, "-i", volid, "-C", str(out), str(size // 1024)],
        stdout=subprocess.DEVNULL)
    clamp_mtimes(boot, epoch)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for path in sorted(boot.rglob("*")):
        rel = path.relative_to(boot).as_posix()
        if path.is_dir():
            run(["mmd", "-i", str(out), f"::{rel}"], env)
        else:
            run(["mcopy", "-m", "-i", str(out), str(path), f"::{rel}"], env)


def make_ext4(tree: Path, out: Path, size: int, label: str, fs_uuid: str, epoch: int,
              extra: list[str]) -> None:
    """An ext4 file system holding ``tree`` (owners, modes, links, xattrs kept)."""
    out.unlink(missing_ok=True)
    clamp_mtimes(tree, epoch)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch)}
    run(["mkfs.ext4", "-q", "-F", "-L", label, "-U", fs_uuid, "-E",
         f"hash_seed={fs_uuid},root_owner=0:0", *extra, "-d", str(tree), str(out),
         f"{size // 1024}k"], env)


def assemble(args: argparse.Namespace) -> None:
    parts = layout.plan()
    by_label = {p.spec.label: p for p in parts}
    work = Path(tempfile.mkdtemp(prefix="assemble-", dir=args.out.parent))
    try:
        fs_files: dict[str, Path] = {}
        boot = by_label["DGBOOT"]
        fs_files["DGBOOT"] = work / "boot.vfat"
        make_fat(args.boot, fs_files["DGBOOT"], boot.size,
                 layout.fat_volume_id(args.version, args.variant), "DGBOOT", args.epoch)
        for label, tree, extra in (
            ("rootA", args.root, []),
            # 1 % reserved for root (the gateway's own user fills the rest).
            ("dgdata", args.data, ["-m", "1"]),
        ):
            fs_files[label] = work / f"{label}.ext4"
            make_ext4(tree, fs_files[label], by_label[label].size, label,
                      layout.fs_uuid(args.version, args.variant, label), args.epoch, extra)
        # data=journal is also the data partition's default mount option (tune2fs -l shows it),
        # so a mount that forgets the option (an engineer's laptop) journals data too.
        run(["tune2fs", "-o", "journal_data", str(fs_files["dgdata"])], stdout=subprocess.DEVNULL)
        tmp = args.out.with_name(args.out.name + ".partial")
        tmp.unlink(missing_ok=True)
        with tmp.open("wb") as fh:
            fh.truncate(layout.disk_size(parts))
        script = layout.sfdisk_script(parts, layout.disk_id(args.version, args.variant))
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(tmp)], input=script.encode())
        for part in parts:
            src = fs_files.get(part.spec.label)
            if src is None:
                continue  # rootB: left zeroed (a hole in the file)
            run(["dd", f"if={src}", f"of={tmp}", "bs=4M", f"seek={part.offset // layout.ALIGN}",
                 "conv=notrunc,sparse", "status=none"])
        tmp.replace(args.out)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--variant", required=True, choices=["rpi4", "qemu"])
    parser.add_argument("--boot", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", 0)))
    assemble(parser.parse_args())


if __name__ == "__main__":
    main()
