#!/usr/bin/env python3
"""Copy an exported artifact (or golden vectors) into a demo app's resource folder.

    python3 apps/scripts/copy-export.py web EXPORT_DIR         # -> apps/web/model/
    python3 apps/scripts/copy-export.py android EXPORT_DIR     # -> apps/android/.../assets/model/
    python3 apps/scripts/copy-export.py ios EXPORT_DIR         # -> apps/ios/Model/
    python3 apps/scripts/copy-export.py ios-golden GOLDEN_DIR  # -> apps/ios/Golden/

The artifact's manifest.json must name the target the app runs (web: onnx, android: executorch,
ios: coreml) and every file it lists must match its sha256; the destination is replaced as a
whole (written beside it, then renamed). Those folders are git-ignored: models never go into git.
Standard library only, so it runs with any Python 3.8+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent
DESTINATIONS = {
    "web": ("onnx", APPS / "web" / "model"),
    "android": ("executorch", APPS / "android" / "app" / "src" / "main" / "assets" / "model"),
    "ios": ("coreml", APPS / "ios" / "Model"),
    "ios-golden": (None, APPS / "ios" / "Golden"),
}


class CopyError(Exception):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_artifact(source: Path, target: str) -> dict:
    """The manifest, after checking the target and every listed file's size and sha256."""
    path = source / "manifest.json"
    if not path.is_file():
        raise CopyError(f"{source} is not a restv2-edge export (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CopyError(f"{path}: malformed manifest ({exc})") from None
    if manifest.get("target") != target:
        raise CopyError(
            f"{source} was exported for {manifest.get('target')}; this app needs "
            f"`restv2-edge export --target {target}`"
        )
    files = manifest.get("files") or []
    if not files:
        raise CopyError(f"{path}: lists no files")
    for entry in files:
        file = source / entry["path"]
        if not file.is_file():
            raise CopyError(f"{source}: missing file {entry['path']}")
        if file.stat().st_size != entry["bytes"] or sha256(file) != entry["sha256"]:
            raise CopyError(f"{source}: {entry['path']} does not match its sha256 (tampered?)")
    return manifest


def check_golden(source: Path) -> dict:
    path = source / "golden.json"
    if not path.is_file():
        raise CopyError(f"{source} holds no golden vectors (no golden.json)")
    return json.loads(path.read_text())


def copy_tree(source: Path, dest: Path, names: list[str]) -> None:
    """Copy ``names`` (relative paths) from source into a fresh ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for name in names:
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target)
        work.chmod(0o755)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(work, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def run(app: str, source: Path, dest: Path | None = None) -> Path:
    target, default_dest = DESTINATIONS[app]
    dest = dest or default_dest
    if not source.is_dir():
        raise CopyError(f"not a folder: {source}")
    if target is None:
        index = check_golden(source)
        names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        what = f"{len(index.get('images', []))} golden images"
    else:
        manifest = check_artifact(source, target)
        names = ["manifest.json"] + [entry["path"] for entry in manifest["files"]]
        what = f"{manifest['target']} {manifest['precision']} artifact"
    copy_tree(source, dest, names)
    print(f"copied {what} from {source} to {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=sorted(DESTINATIONS))
    parser.add_argument("source", type=Path, help="export folder (or golden folder for ios-golden)")
    parser.add_argument("--dest", type=Path, default=None, help="override the destination folder")
    args = parser.parse_args(argv)
    try:
        run(args.app, args.source, args.dest)
    except (CopyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
