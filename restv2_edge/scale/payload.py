"""Shipping an artifact to a Ray worker, and opening it there only after verifying it.

Two ways, both ending in ``open_artifact`` (every file checked against the manifest's sha256
before a runtime reads it):

- ``bytes`` (the default): the driver verifies the folder, reads manifest.json and the files
  it lists, and puts them in Ray's object store once per artifact; a worker writes them into
  a per-user cache folder (``$TMPDIR/restv2-edge-ray-UID/<manifest hash>/``) and opens that.
- ``shared``: the artifact's path is on storage every node mounts at the same path (NFS,
  a PVC); only the path travels, and each worker verifies the files it reads.

Either way the worker checks that the manifest it opens is the one the driver hashed, so a
different artifact at the same path on some node is refused rather than evaluated.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from restv2_edge.errors import ArtifactError
from restv2_edge.manifest import MANIFEST_NAME, verify_files

BYTES, SHARED = "bytes", "shared"


def pack_artifact(folder: str | os.PathLike[str], mode: str = BYTES) -> dict[str, Any]:
    """What a worker needs to open ``folder``: its manifest hash and its files or its path."""
    folder = Path(folder)
    manifest = verify_files(folder)
    raw = (folder / MANIFEST_NAME).read_bytes()
    payload: dict[str, Any] = {"name": folder.name, "key": hashlib.sha256(raw).hexdigest()}
    if mode == SHARED:
        payload["path"] = str(folder.resolve())
        return payload
    files = {MANIFEST_NAME: raw}
    for entry in manifest.files:
        files[entry["path"]] = (folder / entry["path"]).read_bytes()
    payload["files"] = files
    return payload


def payload_bytes(payload: dict[str, Any]) -> int:
    """Bytes a payload puts on the network (once per artifact and node)."""
    return sum(len(blob) for blob in payload.get("files", {}).values())


def cache_root() -> Path:
    return Path(tempfile.gettempdir()) / f"restv2-edge-ray-{os.getuid()}"


def materialize(payload: dict[str, Any]) -> Path:
    """The artifact folder on this worker: the shared path, or the shipped files written into
    the cache (once per node; concurrent workers race to one rename, the loser reuses it).
    The folder is verified when opened; here only the manifest hash is checked."""
    if "path" in payload:
        folder = Path(payload["path"])
    else:
        folder = cache_root() / payload["key"][:32] / payload["name"]
        if not folder.is_dir():
            _write_files(folder, payload["files"])
    check_manifest_hash(folder, payload["key"])
    return folder


def check_manifest_hash(folder: Path, key: str) -> None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST_NAME} on this worker")
    if hashlib.sha256(path.read_bytes()).hexdigest() != key:
        raise ArtifactError(
            f"{folder}: manifest.json on this worker differs from the driver's (another "
            "artifact at the same path?)"
        )


def publish_payload(payload: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write a shipped artifact to ``folder`` (replacing it, as a local bench matrix does) the
    way every output is written (restv2_edge.publish), then verify it."""
    from restv2_edge.publish import staged_dir

    with staged_dir(folder, force=True) as work:
        _fill(work, payload["files"])
    verify_files(folder)
    check_manifest_hash(Path(folder), payload["key"])
    return Path(folder)


def _fill(work: Path, files: dict[str, bytes]) -> None:
    for relative, blob in files.items():
        parts = PurePosixPath(relative).parts
        if PurePosixPath(relative).is_absolute() or ".." in parts or not parts:
            raise ArtifactError(f"shipped artifact names a path outside its folder: {relative}")
        target = work.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    work = folder.with_name(f".{folder.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    work.mkdir(parents=True)
    _fill(work, files)
    try:
        os.rename(work, folder)
    except OSError:
        if not folder.is_dir():
            raise
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # another worker on this node was first
