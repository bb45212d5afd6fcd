"""manifest.json: the one contract between an artifact folder and everything that reads it.

The artifact expects ``(rgb_uint8 * scale - mean) / std`` per channel in ``input.layout``,
computed on an image resized (shorter side to image_size / crop_pct, bicubic) and
center-cropped to image_size. A raw-input artifact has scale 1, mean 0, std 1.
A non-square artifact (``image_size`` [height, width]) has ``input.resize`` "stretch": the
image is resized to exactly height x width (no crop, aspect ratio not kept). A features
artifact (``head`` "features") lists its outputs in ``outputs`` and has no classes
(``num_classes`` null, ``labels`` empty, ``output`` null); docs/manifest.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from restv2_edge.errors import ArtifactError
from restv2_edge.preprocess import Preprocessing

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: a manifest is a few kB (1000 labels included); anything far larger is not one
MAX_MANIFEST_BYTES = 4 << 20
#: ``input.resize``: shorter side to image_size / crop_pct, then a center crop (the default)
CENTER_CROP = "center_crop"
#: ``input.resize``: straight to height x width (a non-square input)
STRETCH = "stretch"
#: written only for a features head: a classifier's manifest reads as before heads existed
FEATURES_ONLY = ("head", "outputs", "output_norms", "checkpoint_layout")


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
    image_size: int | list[int]
    num_classes: int | None
    model_file: str
    input: dict[str, Any]
    output: dict[str, Any] | None
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
    #: "classifier" or "features" (absent from a classifier's manifest: classifier)
    head: str = "classifier"
    #: every graph output, in order: {name, shape, stride, channels} (features only)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    #: features: "checkpoint" (norm_1..norm_4 applied) or "identity"; null for a classifier
    output_norms: str | None = None
    #: the weights' layout (classification, detectron2, mmseg); null without weights
    checkpoint_layout: str | None = None

    # -- input conventions -------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """The batch the artifact was exported with (``input.shape[0]``)."""
        return int(self.input["shape"][0])

    @property
    def dynamic_batch(self) -> bool:
        """Whether the batch dimension is symbolic: the runtime takes any count
        (``input.dynamic_batch``; absent in older manifests: false)."""
        return bool(self.input.get("dynamic_batch", False))

    @property
    def input_hw(self) -> tuple[int, int]:
        """The input's (height, width)."""
        if isinstance(self.image_size, (list, tuple)):
            return int(self.image_size[0]), int(self.image_size[1])
        return int(self.image_size), int(self.image_size)

    @property
    def features(self) -> bool:
        """Whether this is a backbone artifact (several feature maps, no classes)."""
        return self.head == "features"

    @property
    def resize(self) -> str:
        """How an image becomes the input: CENTER_CROP or STRETCH (``input.resize``; absent,
        as in every square artifact's manifest: CENTER_CROP)."""
        return self.input.get("resize", CENTER_CROP)

    @property
    def output_names(self) -> list[str]:
        """The graph's output names, in the order a runner returns them."""
        if self.outputs:
            return [entry["name"] for entry in self.outputs]
        return [self.output["name"]] if self.output else []

    @property
    def raw_input(self) -> bool:
        return self.input.get("scale") == 1.0 and self.input.get("std") == [1.0, 1.0, 1.0]

    def preprocessing(self) -> Preprocessing:
        """The eval transform this artifact expects, as a Preprocessing (a square center
        crop). A stretch-resized (non-square) artifact has none: ``normalization`` and
        ``parity.image_input`` serve it."""
        if self.resize != CENTER_CROP:
            raise ArtifactError(
                f"this artifact's input is a {self.resize} resize to "
                f"{self.input_hw[0]}x{self.input_hw[1]}, not a square center crop"
            )
        return self.normalization()

    def normalization(self) -> Preprocessing:
        """Scale, mean and std (and the crop geometry where there is one) as a Preprocessing;
        for a stretch-resized artifact only its scale, mean, std and interpolation apply."""
        return Preprocessing(
            image_size=self.input_hw[0],
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
            "head",
            "outputs",
            "output_norms",
            "checkpoint_layout",
            "labels",
            "versions",
            "parity",
            "graph_form",
            "export",
            "quantization",
        ]
        if self.head == "classifier":  # a classifier's manifest keeps its pre-head keys
            order = [key for key in order if key not in FEATURES_ONLY]
        return json.dumps({key: data[key] for key in order}, indent=2) + "\n"

    def write(self, folder: Path) -> Path:
        """Hash the folder's files into ``files`` and write manifest.json."""
        self.files = list_files(folder)
        path = folder / MANIFEST_NAME
        path.write_text(self.to_json())
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Manifest:
        """Parse and validate manifest.json (types, ranges, format version); no hashing."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ArtifactError(f"not an artifact folder: {folder}")
        if path.is_symlink():
            raise ArtifactError(f"{path} is a symbolic link; an artifact holds plain files only")
        if not path.is_file():
            raise ArtifactError(f"{folder} is not a restv2-edge artifact (no {MANIFEST_NAME})")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest")
        try:
            data = json.loads(path.read_text(), parse_constant=_refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"{path}: malformed manifest ({exc})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        from restv2_edge.manifest_schema import check_manifest

        problems = check_manifest(data, FORMAT_VERSION)
        if problems:
            raise ArtifactError(f"{where}: {problems[0]}")
        return cls(**data)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def verify_files(folder: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Validate the manifest and check every file before any runtime reads one.

    Paths must be relative and stay inside the folder, nothing may be a symbolic link, every
    listed file must match its size and sha256, ``model_file`` (and a labels file) must be
    listed, and the folder may hold no file the manifest does not list.
    """
    folder = Path(folder)
    manifest = manifest or Manifest.read(folder)
    root = folder.resolve()
    listed = {entry["path"] for entry in manifest.files}
    for entry in manifest.files:
        path = _inside(folder, root, entry["path"])
        if not path.is_file():
            raise ArtifactError(f"{folder}: missing file {entry['path']}")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{folder}: {entry['path']} does not match its sha256 (tampered?)")
    for name in _model_paths(manifest):
        if name not in listed and not any(p.startswith(name + "/") for p in listed):
            raise ArtifactError(f"{folder}: {name} is not among the manifest's hashed files")
    extra = sorted(set(_all_files(folder, root)) - listed)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ArtifactError(
            f"{folder}: {extra[0]}{more} is not listed in the manifest; an artifact holds only "
            "the files its manifest hashes"
        )
    return manifest


def _model_paths(manifest: Manifest) -> list[str]:
    names = [manifest.model_file]
    if isinstance(manifest.labels, str):
        names.append(manifest.labels)
    return names


def _inside(folder: Path, root: Path, relative: str) -> Path:
    """``folder / relative``, refusing symbolic links on the way and paths that leave it."""
    path = folder
    for part in PurePosixPath(relative).parts:
        path = path / part
        if path.is_symlink():
            raise ArtifactError(
                f"{folder}: {relative} goes through a symbolic link; an artifact holds plain "
                "files only"
            )
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ArtifactError(f"{folder}: {relative} points outside the artifact folder")
    return path


def _all_files(folder: Path, root: Path) -> list[str]:
    """Every file and link under ``folder`` but the manifest, as posix relative paths."""
    found = []
    for base, dirs, files in os.walk(folder):
        base_path = Path(base)
        for name in dirs:
            if (base_path / name).is_symlink():
                found.append((base_path / name).relative_to(folder).as_posix())
        for name in files:
            rel = (base_path / name).relative_to(folder).as_posix()
            if rel != MANIFEST_NAME:
                found.append(rel)
    return found
