"""manifest.json: the one contract between an artifact folder and everything that reads it.

The artifact expects ``(rgb_uint8 * scale - mean) / std`` per channel in ``input.layout``,
computed on an image resized (shorter side to image_size / crop_pct, bicubic) and
center-cropped to image_size. A raw-input artifact has scale 1, mean 0, std 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restv2_edge.errors import ArtifactError
from restv2_edge.preprocess import Preprocessing

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(folder: Path) -> list[dict[str, Any]]:
    """Every file under ``folder`` but the manifest: path, sha256, bytes (sorted by path)."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST_NAME:
            continue
        entries.append({"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return entries


@dataclass
class Manifest:
    target: str
    precision: str
    image_size: int
    num_classes: int
    model_file: str
    input: dict[str, Any]
    output: dict[str, Any]
    labels: list[str] | str
    variant: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    graph_form: str = "native"
    files: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    # -- input conventions -------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return int(self.input["shape"][0])

    @property
    def raw_input(self) -> bool:
        return self.input.get("scale") == 1.0 and self.input.get("std") == [1.0, 1.0, 1.0]

    def preprocessing(self) -> Preprocessing:
        """The eval transform this artifact expects, as a Preprocessing."""
        return Preprocessing(
            image_size=self.image_size,
            crop_pct=float(self.input["crop_pct"]),
            mean=tuple(self.input["mean"]),
            std=tuple(self.input["std"]),
            interpolation=self.input.get("interpolation", "bicubic"),
            scale=float(self.input["scale"]),
        )

    def class_names(self, folder: Path | None = None) -> list[str]:
        if isinstance(self.labels, list):
            return list(self.labels)
        if folder is None:
            raise ArtifactError("labels live in a file; the artifact folder is needed")
        return [line for line in (folder / self.labels).read_text().splitlines() if line]

    # -- io -----------------------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        order = [
            "format_version",
            "target",
            "precision",
            "variant",
            "config",
            "image_size",
            "num_classes",
            "model_file",
            "files",
            "input",
            "output",
            "labels",
            "versions",
            "parity",
            "graph_form",
            "export",
            "quantization",
        ]
        return json.dumps({key: data[key] for key in order}, indent=2) + "\n"

    def write(self, folder: Path) -> Path:
        """Hash the folder's files into ``files`` and write manifest.json."""
        self.files = list_files(folder)
        path = folder / MANIFEST_NAME
        path.write_text(self.to_json())
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ArtifactError(f"not an artifact folder: {folder}")
        if not path.is_file():
            raise ArtifactError(f"{folder} is not a restv2-edge artifact (no {MANIFEST_NAME})")
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactError(f"{path}: malformed manifest ({exc})") from None


def verify_files(folder: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Read the manifest and check every listed file's size and sha256; raise on mismatch."""
    folder = Path(folder)
    manifest = manifest or Manifest.read(folder)
    if not manifest.files:
        raise ArtifactError(f"{folder}: manifest lists no files")
    for entry in manifest.files:
        path = folder / entry["path"]
        if not path.is_file():
            raise ArtifactError(f"{folder}: missing file {entry['path']}")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{folder}: {entry['path']} does not match its sha256 (tampered?)")
    return manifest
