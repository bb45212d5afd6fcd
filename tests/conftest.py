"""Shared fixtures. Real data comes through ``shared_data`` only (RESTV2_EDGE_DATA overrides).

Without the data, tests that need it skip with a reason -- except under CI (CI=true), where
missing data is a failure.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from reference_restv2 import randomize_, reference_model

from restv2_edge.checkpoint import save_checkpoint
from restv2_edge.data import shared_data_root
from restv2_edge.factory import create_model
from restv2_edge.preprocess import Preprocessing

FIXTURE_CHECKPOINT = Path(__file__).parent / "fixtures" / "restv2_cifar10.safetensors"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

# A small custom config for tests that export many times (all four stages, sr 8/4/2/1).
TINY_CONFIG = {
    "embed_dims": [16, 32, 64, 128],
    "num_heads": [1, 2, 4, 8],
    "depths": [1, 1, 2, 1],
    "sr_ratios": [8, 4, 2, 1],
    "num_classes": 10,
}
TINY_IMAGE_SIZE = 64


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (../shared/data beside the checkout, or $RESTV2_EDGE_DATA)."""
    root = shared_data_root()
    if not (root / "imagenet-sample" / "images").is_dir() or not (root / "cifar10").is_dir():
        _missing(f"shared data not found at {root} (set RESTV2_EDGE_DATA)")
    return root


@pytest.fixture(scope="session")
def photo_dir(shared_data: Path) -> Path:
    return shared_data / "imagenet-sample" / "images"


@pytest.fixture(scope="session")
def cifar_test_tar(shared_data: Path) -> Path:
    return shared_data / "cifar10" / "test.tar"


@pytest.fixture(scope="session")
def cifar_train_tar(shared_data: Path) -> Path:
    return shared_data / "cifar10" / "train.tar"


@pytest.fixture(scope="session")
def fixture_checkpoint() -> Path:
    """The committed CIFAR-10 ResTv2 (own format), used for every accuracy check."""
    if not FIXTURE_CHECKPOINT.is_file():
        pytest.fail(f"{FIXTURE_CHECKPOINT} is missing from the repository")
    return FIXTURE_CHECKPOINT


def official_checkpoint(path: Path, variant: str = "T", seed: int = 0, **overrides) -> Path:
    """An official-layout .pth ({"model": state_dict}) with every tensor randomized."""
    ref = randomize_(reference_model(variant, **overrides), seed)
    torch.save({"model": ref.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Own-format checkpoint of TINY_CONFIG at 64x64, every tensor randomized."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    ref = randomize_(reference_model("custom", **TINY_CONFIG), seed=3)
    model = create_model(TINY_CONFIG, TINY_IMAGE_SIZE)
    from restv2_edge.checkpoint import load_official_into

    load_official_into(model, ref.state_dict())
    save_checkpoint(model, path, CIFAR10_CLASSES, Preprocessing(TINY_IMAGE_SIZE, crop_pct=1.0))
    return path


@pytest.fixture(scope="session")
def t_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Official-layout ResTv2-T .pth with every tensor randomized (ImageNet head)."""
    return official_checkpoint(tmp_path_factory.mktemp("ckpt") / "restv2_t.pth", "T", seed=1)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run ``restv2-edge ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "restv2_edge.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, one ``error:`` line naming the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


# -- shared helpers for per-target and contract tests ------------------------------------------


def oracle_model(checkpoint: Path, variant: str = "custom", **config) -> torch.nn.Module:
    """The official-structure reference model (tests/reference_restv2.py) carrying the
    checkpoint's weights: ``variant`` "custom" with TINY_CONFIG-style ``config``, or "T"..."""
    from restv2_edge.checkpoint import read_checkpoint

    model = reference_model(variant, **config)
    model.load_state_dict(read_checkpoint(checkpoint).state_dict)
    return model.eval()


def oracle_logits(model: torch.nn.Module, images) -> np.ndarray:
    """The reference model's float32 logits for a float32 NCHW batch (numpy in, numpy out)."""
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(images))).numpy()


def sha256_path(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but manifest.json -> its sha256, hashed here (not by the
    product's manifest code)."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): sha256_path(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != "manifest.json"
    }


def export_tiny(
    checkpoint: Path,
    target: str,
    precision: str,
    out: Path,
    photo_dir: Path | None,
    parity_limit: int = 8,
    **request,
):
    """Export the tiny checkpoint in-process to ``target`` at ``precision``; (folder, manifest).

    A target whose backend is not installed skips (fails under CI=true)."""
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.errors import BackendMissingError
    from restv2_edge.export import export_artifact

    model = create_model(weights=checkpoint)
    try:
        return export_artifact(
            model,
            target,
            out,
            ExportRequest(precision=precision, **request),
            parity_data=photo_dir,
            parity_limit=parity_limit,
        )
    except BackendMissingError as exc:
        _missing(str(exc))


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint: Path, photo_dir: Path, tmp_path_factory):
    """``tiny_artifact(target, precision)`` -> (folder, manifest): the tiny checkpoint exported
    once per session per target and float precision (parity on 8 photos of ``photo_dir``).
    Callers must not modify the folder (copy it first)."""
    cache: dict[tuple[str, str], tuple[Path, object]] = {}
    root = tmp_path_factory.mktemp("tiny-artifacts")

    def get(target: str, precision: str):
        key = (target, precision)
        if key not in cache:
            out = root / f"tiny-{target}-{precision}"
            cache[key] = export_tiny(tiny_checkpoint, target, precision, out, photo_dir)
        return cache[key]

    return get
