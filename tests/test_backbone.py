"""The features head: ResTv2 as the official detection/segmentation backbone.

Every check compares with tests/reference_restv2.py's official-structure backbone
(``RefResTV2Backbone``: dynamic reshapes, the official channels-first LayerNorm written out),
loaded from checkpoints built in the official detectron2 and mmseg layouts with every tensor
randomized -- backbone and the other heads' tensors alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE
from PIL import Image
from reference_restv2 import randomize_, reference_backbone, reference_model

from restv2_edge.checkpoint import Checkpoint, save_checkpoint, split_backbone
from restv2_edge.complexity import count_params
from restv2_edge.data import open_unlabelled
from restv2_edge.errors import CheckpointError, ConfigError
from restv2_edge.factory import create_model, with_form
from restv2_edge.model import FEATURE_NAMES, FEATURE_STRIDES, ResTV2
from restv2_edge.preprocess import Preprocessing

FORMS = ["native", "decomposed"]
SIZES = [(96, 160), TINY_IMAGE_SIZE]
PREFIX = {"detectron2": "backbone.bottom_up.", "mmseg": "backbone."}


def _random(shape, gen):
    return 0.1 * torch.randn(shape, generator=gen)


def _other_heads(layout: str, seed: int) -> dict[str, torch.Tensor]:
    """A few tensors of the heads a real checkpoint carries beside the backbone (random)."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "detectron2":
        shapes = {
            "backbone.fpn_lateral2.weight": (8, 16, 1, 1),
            "backbone.fpn_lateral2.bias": (8,),
            "backbone.fpn_output5.weight": (8, 8, 3, 3),
            "proposal_generator.rpn_head.conv.weight": (8, 8, 3, 3),
            "roi_heads.box_head.fc1.weight": (16, 8),
            "roi_heads.box_predictor.cls_score.weight": (81, 16),
            "pixel_mean": (3, 1, 1),
        }
    else:
        shapes = {
            "decode_head.conv_seg.weight": (150, 8, 1, 1),
            "decode_head.psp_modules.0.1.conv.weight": (8, 128, 1, 1),
            "decode_head.bottleneck.bn.running_var": (8,),
            "auxiliary_head.conv_seg.weight": (150, 4, 1, 1),
        }
    return {key: _random(shape, gen) for key, shape in shapes.items()}


def _official_file(tmp_path, layout: str, ref: torch.nn.Module, seed: int = 0):
    """``ref``'s weights saved the way the official detectron2 / mmseg trainers save them."""
    state = {PREFIX[layout] + key: value for key, value in ref.state_dict().items()}
    state.update(_other_heads(layout, seed))
    if layout == "detectron2":
        obj = {"model": state, "iteration": 269999}
    else:
        meta = {"mmseg_version": "0.20.2", "CLASSES": ("wall", "building"), "iter": 160000}
        obj = {"meta": meta, "state_dict": state}
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    return path


def _photos(photo_dir, size, count: int = 2) -> torch.Tensor:
    """Real photos resized to (height, width), ImageNet-normalized by hand."""
    height, width = (size, size) if isinstance(size, int) else size
    images = [img for _, _, img in open_unlabelled(photo_dir).subset(count).iter_images()]
    pixels = np.stack(
        [np.asarray(img.convert("RGB").resize((width, height), Image.BICUBIC)) for img in images]
    ).astype(np.float32)
    x = (pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def _assert_same_maps(got, expected, size):
    height, width = (size, size) if isinstance(size, int) else size
    assert isinstance(got, tuple) and len(got) == 4
    for index, (out, ref, stride) in enumerate(zip(got, expected, FEATURE_STRIDES)):
        channels = TINY_CONFIG["embed_dims"][index]
        assert out.shape == (ref.shape[0], channels, height // stride, width // stride)
        assert ref.std() > 0.1  # random weights, non-degenerate maps
        tolerance = 1e-5 * max(1.0, ref.abs().max().item())
        assert (out - ref).abs().max().item() <= tolerance, FEATURE_NAMES[index]


@pytest.mark.parametrize("layout", ["detectron2", "mmseg"])
@pytest.mark.parametrize("size", SIZES, ids=["96x160", "64"])
def test_official_backbone_checkpoints_give_the_official_features(
    tmp_path, photo_dir, layout, size
):
    ref = randomize_(reference_backbone("custom", norms=layout, **TINY_CONFIG), seed=21)
    path = _official_file(tmp_path, layout, ref, seed=22)
    x = _photos(photo_dir, size)
    with torch.no_grad():
        expected = ref(x)
    for form in FORMS:
        model = create_model(TINY_CONFIG, size, weights=path, form=form, head="features")
        assert model.output_norms == "checkpoint"
        result = model.load_result
        assert result.layout == layout and result.output_norms_loaded
        assert result.loaded == len(ref.state_dict())
        assert result.ignored == len(_other_heads(layout, 0))
        with torch.no_grad():
            _assert_same_maps(model(x), expected, size)


def test_classification_checkpoint_gives_identity_output_norms(tmp_path, photo_dir):
    """Classification weights have no norm_1..norm_4: the maps come straight out of the stages
    (and the classifier's final norm and head are ignored)."""
    classifier = randomize_(reference_model("custom", **TINY_CONFIG), seed=23)
    path = tmp_path / "cls.pth"
    torch.save({"model": classifier.state_dict()}, path)
    ref = reference_backbone("custom", norms=None, **TINY_CONFIG)
    skipped = ref.load_state_dict(classifier.state_dict(), strict=False)
    assert sorted(skipped.unexpected_keys) == [
        "head.bias",
        "head.weight",
        "norm.bias",
        "norm.weight",
    ]
    assert not skipped.missing_keys
    size = (96, 160)
    x = _photos(photo_dir, size)
    with torch.no_grad():
        expected = ref(x)
    for form in FORMS:
        model = create_model(TINY_CONFIG, size, weights=path, form=form, head="features")
        assert model.output_norms == "identity"
        assert model.load_result.layout == "classification"
        assert model.load_result.ignored == 4
        assert not any(name.startswith("norm") for name, _ in model.named_parameters())
        with torch.no_grad():
            _assert_same_maps(model(x), expected, size)


def test_own_format_checkpoint_builds_a_features_model(tiny_checkpoint):
    model = create_model(weights=tiny_checkpoint, head="features")
    assert model.output_norms == "identity" and model.image_size == TINY_IMAGE_SIZE
    assert model.class_names is None and model.preprocessing.image_size == TINY_IMAGE_SIZE
    wide = create_model(weights=tiny_checkpoint, image_size=(64, 128), head="features")
    assert wide.input_hw == (64, 128) and wide.image_size == (64, 128)
    assert wide.preprocessing is None  # the square eval transform does not apply
    assert [tuple(out.shape) for out in wide(torch.randn(1, 3, 64, 128))] == [
        tuple(spec.shape) for spec in wide.output_specs()
    ]


def test_output_specs_name_shape_stride_channels():
    model = create_model(TINY_CONFIG, (96, 160), head="features")
    specs = [spec.to_dict() for spec in model.output_specs(batch=2)]
    assert specs == [
        {"name": "stage1", "shape": [2, 16, 24, 40], "stride": 4, "channels": 16},
        {"name": "stage2", "shape": [2, 32, 12, 20], "stride": 8, "channels": 32},
        {"name": "stage3", "shape": [2, 64, 6, 10], "stride": 16, "channels": 64},
        {"name": "stage4", "shape": [2, 128, 3, 5], "stride": 32, "channels": 128},
    ]
    classifier = create_model(TINY_CONFIG, TINY_IMAGE_SIZE)
    assert [spec.to_dict() for spec in classifier.output_specs()] == [
        {"name": "logits", "shape": [1, 10], "stride": None, "channels": 10}
    ]
    for batch in (1, 3):  # no reshape bakes in the batch
        outs = model(torch.randn(batch, 3, 96, 160))
        assert [tuple(o.shape) for o in outs] == [s.shape for s in model.output_specs(batch)]


def test_with_form_keeps_head_norms_and_size(tmp_path):
    ref = randomize_(reference_backbone("custom", norms="mmseg", **TINY_CONFIG), seed=24)
    model = create_model(
        TINY_CONFIG, (96, 160), weights=_official_file(tmp_path, "mmseg", ref), head="features"
    )
    other = with_form(model, "decomposed")
    assert (other.head_type, other.output_norms, other.input_hw) == (
        "features",
        "checkpoint",
        (96, 160),
    )
    x = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(model(x), other(x)):
            assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
    identity = with_form(create_model(TINY_CONFIG, 64, head="features", weights=Checkpoint(
        reference_model("custom", **TINY_CONFIG).state_dict())), "decomposed")  # fmt: skip
    assert identity.output_norms == "identity"


@pytest.mark.parametrize("form", FORMS)
def test_features_graph_is_static_and_rank4(form):
    """torch.export: four static outputs, every tensor rank <= 4, no shape read at run time."""
    model = create_model(TINY_CONFIG, (96, 160), form=form, head="features")
    program = torch.export.export(model, (torch.randn(1, 3, 96, 160),))
    graph = program.run_decompositions() if form == "decomposed" else program
    shapes = []
    for node in graph.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(val.shape))
        assert "sym_size" not in str(node.target)
    assert shapes and max(len(shape) for shape in shapes) <= 4
    assert all(isinstance(d, int) for shape in shapes for d in shape)
    output = next(node for node in graph.graph.nodes if node.op == "output")
    got = [tuple(item.meta["val"].shape) for item in output.args[0]]
    assert got == [spec.shape for spec in model.output_specs()]


def test_missing_backbone_keys_are_one_line_errors(tmp_path):
    ref = randomize_(reference_backbone("custom", norms="detectron2", **TINY_CONFIG), seed=25)
    state = {PREFIX["detectron2"] + k: v for k, v in ref.state_dict().items()}
    state.pop("backbone.bottom_up.stage3.1.attn.q.weight")
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        create_model(TINY_CONFIG, 64, weights=path, head="features")
    message = str(info.value)
    assert "\n" not in message
    assert "detectron2" in message and "missing keys: stage3.1.attn.q.weight" in message

    partial = {k: v for k, v in ref.state_dict().items() if not k.startswith("norm_4")}
    with pytest.raises(CheckpointError, match=r"norm_1\.\.norm_4"):
        split_backbone(partial)


def test_a_backbone_checkpoint_is_no_classifier(tmp_path):
    ref = randomize_(reference_backbone("custom", norms="mmseg", **TINY_CONFIG), seed=26)
    with pytest.raises(CheckpointError, match="head='features'"):
        create_model(TINY_CONFIG, 64, weights=_official_file(tmp_path, "mmseg", ref))
    with pytest.raises(ConfigError, match="unknown head"):
        ResTV2(create_model(TINY_CONFIG, 64).config, 64, head="boxes")


def test_features_model_params_and_refusals(tmp_path):
    model = create_model(TINY_CONFIG, (96, 160), head="features")
    params = count_params(model)
    assert sum(params.values()) == sum(p.numel() for p in model.parameters())
    assert params["head"] == 0
    with pytest.raises(CheckpointError, match="square classifiers"):
        save_checkpoint(model, tmp_path / "x.safetensors", [], Preprocessing(64))
