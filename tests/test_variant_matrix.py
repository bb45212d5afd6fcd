"""The full T/S/B/L x target x float-precision export matrix (slow: pytest -m slow).

T is exported to every target by the default suite; this adds S, B and L. Results of the
same matrix are in docs/variant-matrix.md (scripts/variant_matrix.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import official_checkpoint, run_cli
from restv2_edge.converters.base import get_converter, target_names

from restv2_edge.manifest import Manifest

CASES = [
    (variant, target, precision)
    for variant in ("S", "B", "L")
    for target in target_names()
    for precision in get_converter(target).precisions
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("variants")
    return {v: official_checkpoint(folder / f"{v}.pth", v, seed=2) for v in ("S", "B", "L")}


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "target", "precision"), CASES)
def test_variant_exports_and_passes_parity(variant, target, precision, checkpoints, photo_dir,
                                           tmp_path):  # fmt: skip
    try:
        get_converter(target).check_installed()
    except Exception as exc:
        pytest.skip(str(exc))
    out = tmp_path / "artifact"
    result = run_cli(
        "export", "--target", target, "--variant", variant, "--weights", checkpoints[variant],
        "--precision", precision, "--parity-data", photo_dir, "--parity-limit", "8",
        "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = Manifest.read(out)
    assert manifest.variant == variant and manifest.precision == precision
    assert manifest.parity["status"] == "passed", manifest.parity
