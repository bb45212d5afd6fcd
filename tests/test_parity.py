"""The parity comparison and its gates (restv2_edge/parity.py)."""

from __future__ import annotations

import numpy as np

from restv2_edge.parity import compare, failures


def _logits() -> np.ndarray:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10))
    logits[:, 0] = logits.max(axis=1) + 0.001  # image 0..3: class 0 by a hair
    logits[2:, 3] = logits[2:, 0] + 5.0  # images 2, 3: class 3 by a wide margin
    return logits


def test_a_flip_on_a_close_call_is_noise_not_a_failure() -> None:
    reference = _logits()
    candidate = reference + np.random.default_rng(1).normal(scale=0.01, size=reference.shape)
    candidate[0, 0] -= 0.02  # image 0: the hair-thin lead flips
    metrics = compare(reference, candidate)
    assert metrics["top1_agreement"] == 0.75
    assert metrics["close_calls"] == 2  # images 0 and 1
    assert metrics["top1_agreement_clear"] == 1.0
    assert metrics["cosine_mean"] > 0.99
    assert failures(metrics, "int8") == []


def test_a_flip_on_a_clear_call_fails() -> None:
    reference = _logits()
    candidate = reference.copy()
    candidate[3, 3] -= 6.0  # image 3: a wide lead lost
    metrics = compare(reference, candidate)
    assert metrics["top1_agreement_clear"] < 0.9
    assert any("top1_agreement_clear" in line for line in failures(metrics, "int8"))
    assert any("top1_agreement" in line for line in failures(metrics, "fp32"))
