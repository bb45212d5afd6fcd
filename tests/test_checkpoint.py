"""Checkpoints: the official release layouts, safetensors, the own format, and refusals."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import CIFAR10_CLASSES, TINY_CONFIG
from reference_restv2 import randomize_, reference_model
from safetensors.torch import save_file

from restv2_edge.checkpoint import official_state_dict, read_checkpoint, save_checkpoint
from restv2_edge.errors import CheckpointError
from restv2_edge.factory import create_model
from restv2_edge.preprocess import Preprocessing

SIZE = 64


@pytest.fixture(scope="module")
def ref():
    return randomize_(reference_model("custom", **TINY_CONFIG), seed=11)


def _logits(model, seed=0):
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("wrapping", ["model", "state_dict", "bare", "module-prefixed"])
def test_official_pth_layouts_load(tmp_path, ref, wrapping):
    state = ref.state_dict()
    if wrapping == "model":
        obj = {"model": state, "epoch": torch.tensor(3)}
    elif wrapping == "state_dict":
        obj = {"state_dict": state}
    elif wrapping == "module-prefixed":
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = state
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = create_model(TINY_CONFIG, SIZE, weights=path)
    assert torch.allclose(_logits(model), _logits(ref), atol=1e-5)


def test_official_safetensors_loads(tmp_path, ref):
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = create_model(TINY_CONFIG, SIZE, weights=path)
    assert torch.allclose(_logits(model), _logits(ref), atol=1e-5)


def test_official_key_names_are_used(ref):
    keys = set(ref.state_dict())
    assert {"stem.proj.0.weight", "stage1.0.attn.kv.weight", "stage1.0.attn.up.0.weight"} <= keys
    model = create_model(TINY_CONFIG, SIZE)
    assert set(official_state_dict(model)) == keys


def test_own_format_rebuilds_without_arguments(tmp_path, ref):
    model = create_model(TINY_CONFIG, SIZE, weights=_pth(tmp_path, ref))
    pre = Preprocessing(SIZE, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    path = save_checkpoint(model, tmp_path / "own.safetensors", CIFAR10_CLASSES, pre)
    rebuilt = create_model(weights=path)
    assert rebuilt.image_size == SIZE
    assert rebuilt.config.num_classes == 10
    assert rebuilt.class_names == CIFAR10_CLASSES
    assert rebuilt.preprocessing == pre
    assert torch.allclose(_logits(rebuilt), _logits(ref), atol=1e-5)
    # the own format stores the official key layout: an official loader reads it as is
    reread = read_checkpoint(path)
    for key, value in ref.state_dict().items():
        assert torch.equal(reread.state_dict[key], value), key


def _pth(tmp_path, ref):
    path = tmp_path / "plain.pth"
    torch.save({"model": ref.state_dict()}, path)
    return path


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_needing_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Exploit()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="code execution"):
        read_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"corrupt|unreadable"):
        read_checkpoint(bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(bad_st)


def test_other_variant_names_mismatched_shapes(tmp_path):
    small = randomize_(reference_model("custom", **TINY_CONFIG), seed=1)
    path = _pth(tmp_path, small)
    with pytest.raises(CheckpointError) as info:
        create_model("T", 224, weights=path)
    message = str(info.value)
    assert "stem.proj.0.weight" in message and "(8, 3, 3, 3)" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path, ref):
    state = dict(ref.state_dict())
    state.pop("stage2.0.attn.q.bias")
    state["stage9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        create_model(TINY_CONFIG, SIZE, weights=path)
    assert "missing keys: stage2.0.attn.q.bias" in str(info.value)
    assert "unexpected keys: stage9.extra.weight" in str(info.value)


def test_split_backbone_finds_each_layout(ref):
    from restv2_edge.checkpoint import split_backbone

    state = ref.state_dict()
    plain = split_backbone(state)
    assert plain.layout == "classification" and not plain.ignored
    assert plain.state_dict.keys() == state.keys() and not plain.has_output_norms
    norms = {
        f"norm_{i}.0.{kind}": torch.ones(4) for i in range(1, 5) for kind in ("weight", "bias")
    }
    d2 = {f"backbone.bottom_up.{k}": v for k, v in {**state, **norms}.items()}
    d2["roi_heads.box_head.fc1.weight"] = torch.ones(2, 2)
    found = split_backbone(d2)
    assert found.layout == "detectron2" and found.ignored == ["roi_heads.box_head.fc1.weight"]
    assert found.has_output_norms and "norm_3.weight" in found.state_dict
    assert "norm_3.0.weight" not in found.state_dict  # the Sequential index is dropped
    seg = split_backbone({f"module.backbone.{k}": v for k, v in state.items()})
    assert seg.layout == "mmseg" and seg.state_dict.keys() == state.keys()
