#!/usr/bin/env python3
"""Copy an exported artifact (or golden vectors) into a demo app's resource folder.

    python3 apps/scripts/copy-export.py web EXPORT_DIR         # -> apps/web/model/
    python3 apps/scripts/copy-export.py android EXPORT_DIR     # -> apps/android/.../assets/model/
    python3 apps/scripts/copy-export.py ios EXPORT_DIR         # -> apps/ios/Model/
    python3 apps/scripts/copy-export.py ios-golden GOLDEN_DIR  # -> apps/ios/Golden/

The artifact's manifest.json must name the target the app runs (web: onnx, android: executorch,
ios: coreml) and pass the same check every command makes (paths inside the folder, no links,
every file hashed); the destination is replaced as a whole (written beside it, then
renamed). Those folders are git-ignored: models never go into git.
Run it in the environment where restv2-edge is installed: the artifact is verified and the
copy published by the same functions every restv2-edge command uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
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


def check_artifact(source: Path, target: str) -> dict:
    """The manifest, verified as every restv2-edge command verifies it, for ``target``."""
    from restv2_edge.errors import RestV2EdgeError
    from restv2_edge.manifest import verify_files

    try:
        manifest = verify_files(source)
    except RestV2EdgeError as exc:
        raise CopyError(str(exc)) from None
    if manifest.target != target:
        raise CopyError(
            f"{source} was exported for {manifest.target}; this app needs "
            f"`restv2-edge export --target {target}`"
        )
    return {"target": manifest.target, "precision": manifest.precision, "files": manifest.files}


def check_golden(source: Path) -> dict:
    path = source / "golden.json"
    if not path.is_file():
        raise CopyError(f"{source} holds no golden vectors (no golden.json)")
    return json.loads(path.read_text())


def copy_tree(source: Path, dest: Path, names: list[str]) -> None:
    """Copy ``names`` (relative paths) from source into a fresh ``dest``, atomically.

    The app folder is the script's own: it is replaced as a whole (force), through the same
    publish step every restv2-edge command uses.
    """
    from restv2_edge.errors import RestV2EdgeError
    from restv2_edge.publish import staged_dir

    try:
        with staged_dir(dest, force=True) as work:
            for name in names:
                target = work / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, target)
    except RestV2EdgeError as exc:
        raise CopyError(str(exc)) from None


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
        import restv2_edge  # noqa: F401
    except ImportError:
        print("error: restv2-edge is not installed in this Python; run pip install -e . first",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        run(args.app, args.source, args.dest)
    except (CopyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
