"""Checkpoints: the official release layout (.pth / .safetensors) and the project's own format.

The official layout (wofmanaf/ResT ``models/rest_v2.py``) differs from this package's modules in
two places, mapped explicitly here in the manner of timm's checkpoint filter functions:

- ``stageN.i.attn.kv`` (one Linear, 2C outputs: K then V) <-> ``attn.k`` + ``attn.v``
- ``stageN.i.attn.up.0`` (conv inside ``nn.Sequential``) <-> ``attn.up``; in the decomposed
  graph form its output channels are stored in (i, j, c) order instead of (c, i, j).

Detection (detectron2) and segmentation (mmseg) checkpoints hold the same backbone under a
prefix, plus the output norms ``norm_1..norm_4`` the features head applies (``split_backbone``;
docs/backbone.md).

The own format is a ``.safetensors`` file in the official key layout whose metadata (key
``restv2_edge``) carries the config, image size, class names and preprocessing.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restv2_edge.config import ModelConfig
from restv2_edge.errors import CheckpointError
from restv2_edge.preprocess import Preprocessing
from restv2_edge.publish import staged_file

OWN_FORMAT_KEY = "restv2_edge"
OWN_FORMAT_VERSION = 1

_KV = re.compile(r"^(stage\d+\.\d+\.attn)\.kv\.(weight|bias)$")
_UP_OFFICIAL = re.compile(r"^(stage\d+\.\d+\.attn)\.up\.0\.(weight|bias)$")
_KEY_PREFIXES = ("module.", "model.")
_NORM_SEQUENTIAL = re.compile(r"^norm_([1-4])\.0\.(weight|bias)$")
_OUTPUT_NORM = re.compile(r"^norm_([1-4])\.weight$")
_CLASSIFIER = re.compile(r"^(norm|head)\.(weight|bias)$")

#: checkpoint layouts and where each keeps the backbone's keys
LAYOUTS = {"classification": "", "detectron2": "backbone.bottom_up.", "mmseg": "backbone."}


@dataclass
class Checkpoint:
    """Weights in the official key layout, plus the own format's metadata when present."""

    state_dict: dict[str, torch.Tensor]
    config: ModelConfig | None = None
    image_size: int | None = None
    class_names: list[str] | None = None
    preprocessing: Preprocessing | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_own_format(self) -> bool:
        return self.config is not None


@dataclass(frozen=True)
class BackboneWeights:
    """A checkpoint's backbone in the classification key layout (plus ``norm_1..norm_4``)."""

    layout: str
    state_dict: dict[str, torch.Tensor]
    ignored: list[str]
    has_output_norms: bool


@dataclass(frozen=True)
class LoadResult:
    """What ``load_official_into`` loaded: the layout, how many tensors it loaded and how many
    it ignored (other heads: FPN, RPN, ROI heads, decode heads, or the classifier's norm and
    head when a features model takes classification weights)."""

    layout: str
    loaded: int
    ignored: int
    output_norms_loaded: bool


# ----------------------------------------------------------------------------- key mapping


def _up_ratio(model_module: nn.Module, prefix: str) -> int:
    return model_module.get_submodule(prefix).sr_ratio


def _shuffle_order(channels: int, ratio: int) -> torch.Tensor:
    """Index list: decomposed channel k*C + c <- official channel c*r*r + k."""
    dim = channels // (ratio * ratio)
    return torch.arange(channels).view(dim, ratio * ratio).t().reshape(-1)


def to_internal(official: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official-layout state dict -> this model's state dict (form-aware)."""
    decomposed = getattr(model, "form", "native") == "decomposed"
    state: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if match := _KV.match(key):
            attn, kind = match.groups()
            k_part, v_part = value.chunk(2, dim=0)
            state[f"{attn}.k.{kind}"] = k_part.clone()
            state[f"{attn}.v.{kind}"] = v_part.clone()
        elif match := _UP_OFFICIAL.match(key):
            attn, kind = match.groups()
            ratio = _up_ratio(model, attn)
            if decomposed and ratio > 1:
                value = value[_shuffle_order(value.shape[0], ratio)]
            state[f"{attn}.up.{kind}"] = value
        else:
            state[key] = value
    return state


def to_official(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """This model's state dict -> the official key layout (exact inverse of ``to_internal``)."""
    decomposed = getattr(model, "form", "native") == "decomposed"
    official: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        attn, _, rest = key.partition(".attn.")
        if rest in ("k.weight", "k.bias"):
            kind = rest.split(".")[1]
            official[f"{attn}.attn.kv.{kind}"] = torch.cat([value, state[f"{attn}.attn.v.{kind}"]])
        elif rest in ("v.weight", "v.bias"):
            continue
        elif rest in ("up.weight", "up.bias"):
            ratio = _up_ratio(model, f"{attn}.attn")
            if decomposed and ratio > 1:
                value = value[torch.argsort(_shuffle_order(value.shape[0], ratio))]
            official[f"{attn}.attn.up.0.{rest.split('.')[1]}"] = value
        else:
            official[key] = value
    return official


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in the official key layout."""
    return to_official(model.state_dict(), model)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel/EMA wrappers' ``module.``/``model.`` key prefixes."""
    for prefix in _KEY_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def split_backbone(state: dict[str, torch.Tensor]) -> BackboneWeights:
    """Find the backbone in a checkpoint of any official layout (see ``LAYOUTS``).

    detectron2 (object_detection/): the backbone under ``backbone.bottom_up.``, its output
    norms as ``norm_<i>.0.*`` (inside ``nn.Sequential``); mmseg (semantic_segmentation/):
    under ``backbone.``, norms as ``norm_<i>.*``. Everything else (FPN, RPN, ROI heads, decode
    and auxiliary heads, pixel statistics) is another head's and ends up in ``ignored``.
    """
    state = strip_prefixes(state)
    layout = "classification"
    for name, prefix in (("detectron2", "backbone.bottom_up."), ("mmseg", "backbone.")):
        if any(key.startswith(prefix) for key in state):
            layout = name
            break
    prefix = LAYOUTS[layout]
    backbone: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if not key.startswith(prefix):
            ignored.append(key)
            continue
        key = key[len(prefix) :]
        if match := _NORM_SEQUENTIAL.match(key):
            key = f"norm_{match.group(1)}.{match.group(2)}"
        backbone[key] = value
    norms = sorted({int(m.group(1)) for key in backbone if (m := _OUTPUT_NORM.match(key))})
    if norms and norms != [1, 2, 3, 4]:
        raise CheckpointError(
            f"{layout} checkpoint has output norms for stages {norms} only; the features head "
            "needs norm_1..norm_4 (all four stage outputs)"
        )
    return BackboneWeights(layout, backbone, ignored, bool(norms))


def checkpoint_output_norms(state: dict[str, torch.Tensor]) -> str:
    """``checkpoint`` when the weights carry the output norms norm_1..norm_4 (detection and
    segmentation checkpoints), ``identity`` otherwise (classification checkpoints)."""
    return "checkpoint" if split_backbone(state).has_output_norms else "identity"


def load_official_into(model: nn.Module, official: dict[str, torch.Tensor]) -> LoadResult:
    """Load official-layout weights; every missing, unexpected or mis-shaped key is an error.

    A features-head model takes any layout (keys of other heads are counted in the result,
    never loaded); a classifier takes the classification layout only.
    """
    weights = split_backbone(official)
    state = dict(weights.state_dict)
    ignored = list(weights.ignored)
    features = getattr(model, "head_type", "classifier") == "features"
    if not features and weights.layout != "classification":
        raise CheckpointError(
            f"a {weights.layout} checkpoint holds a backbone and no classifier: build the "
            "model with head='features' (export --head features)"
        )
    if features:
        ignored += [key for key in state if _CLASSIFIER.match(key)]
        state = {key: value for key, value in state.items() if not _CLASSIFIER.match(key)}
        if weights.has_output_norms and model.output_norms == "identity":
            raise CheckpointError(
                "checkpoint has output norms norm_1..norm_4 but the model was built with "
                "output_norms='identity'"
            )
        if not weights.has_output_norms and model.output_norms == "checkpoint":
            raise CheckpointError(
                f"{weights.layout} checkpoint has no output norms norm_1..norm_4: build the "
                "model with output_norms='identity' (create_model decides this itself)"
            )
    expected = official_state_dict(model)
    _check_keys(state, expected, weights.layout)
    internal = to_internal({key: state[key] for key in expected}, model)
    current = model.state_dict()
    internal = {key: value.to(dtype=current[key].dtype) for key, value in internal.items()}
    model.load_state_dict(internal, strict=True)
    return LoadResult(weights.layout, len(expected), len(ignored), weights.has_output_norms)


def _check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], layout: str
) -> None:
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    where = "" if layout == "classification" else f" ({layout} layout, under {LAYOUTS[layout]})"
    if mismatched:
        raise CheckpointError(
            f"checkpoint{where} does not fit this model (another variant or class count?): "
            + "; ".join(mismatched[:3])
            + (f" (+{len(mismatched) - 3} more)" if len(mismatched) > 3 else "")
        )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        raise CheckpointError(f"checkpoint keys{where} do not match the model; " + "; ".join(parts))


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ----------------------------------------------------------------------------- files


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read an official .pth/.pt/.bin or a .safetensors file (own format or plain)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return Checkpoint(state_dict=_read_torch(path))


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise CheckpointError(
                f"refusing {path.name}: it is a pickle that needs code execution to load "
                "(only plain tensors are accepted; torch.load(weights_only=True))"
            ) from None
        raise CheckpointError(
            f"corrupt checkpoint {path.name} (or a pickle weights_only loading cannot read)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"corrupt or unreadable checkpoint {path.name}: {first}") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path.name} holds no state dict")
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if len(tensors) != len(obj):
        others = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
        raise CheckpointError(f"{path.name}: entries that are not tensors: {_preview(others)}")
    return tensors


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"corrupt safetensors file {path.name}: {first}") from None
    if not state:
        raise CheckpointError(f"{path.name} holds no tensors")
    if OWN_FORMAT_KEY not in metadata:
        return Checkpoint(state_dict=state)
    try:
        meta = json.loads(metadata[OWN_FORMAT_KEY])
        version = meta.get("format_version", 1)
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path.name}: damaged restv2-edge metadata ({exc})") from None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path.name}: format_version {version!r} is not a version")
    if version > OWN_FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name}: restv2-edge checkpoint format_version {version} is newer than this "
            f"restv2-edge reads ({OWN_FORMAT_VERSION}); upgrade restv2-edge"
        )
    try:
        pre = Preprocessing.from_dict(meta["preprocessing"])
        checkpoint = Checkpoint(
            state_dict=state,
            config=ModelConfig.from_dict(meta["config"]),
            image_size=int(meta["image_size"]),
            class_names=list(meta["class_names"]),
            preprocessing=pre,
            extra=meta.get("extra", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: damaged restv2-edge metadata ({exc})") from None
    if pre.problems():
        raise CheckpointError(f"{path.name}: damaged preprocessing: {pre.problems()[0]}")
    return checkpoint


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    class_names: list[str],
    preprocessing: Preprocessing,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    force: bool = True,
) -> Path:
    """Write the own format atomically: official-layout tensors + full metadata.

    ``force`` False refuses to replace an existing file (checked again when publishing).
    """
    from safetensors.torch import save_file

    if getattr(model, "head_type", "classifier") != "classifier" or not isinstance(
        model.image_size, int
    ):
        raise CheckpointError("the own format stores square classifiers only")
    if len(class_names) != model.config.num_classes:
        raise CheckpointError(
            f"{len(class_names)} class names for a {model.config.num_classes}-class model"
        )
    state = {
        key: (value.to(dtype) if dtype is not None and value.is_floating_point() else value)
        .detach()
        .contiguous()
        for key, value in official_state_dict(model).items()
    }
    meta = {
        "format_version": OWN_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "image_size": model.image_size,
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "extra": extra or {},
    }
    path = Path(path)
    with staged_file(path, force) as tmp:
        save_file(state, str(tmp), metadata={OWN_FORMAT_KEY: json.dumps(meta)})
    return path
