"""The export-friendly model computes the official function, in every graph form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE
from reference_restv2 import randomize_, reference_model

from restv2_edge.checkpoint import load_official_into, official_state_dict
from restv2_edge.data import open_unlabelled
from restv2_edge.factory import create_model, with_form
from restv2_edge.model import GraphForm, RawInput, fold_attention_scale
from restv2_edge.preprocess import Preprocessing, preprocess_image, resize_and_crop

FORMS = [form.value for form in GraphForm]


def photos(folder, size: int, count: int) -> torch.Tensor:
    source = open_unlabelled(folder).subset(count)
    pre = Preprocessing(image_size=size)
    return torch.from_numpy(
        np.stack([preprocess_image(img, pre) for _, _, img in source.iter_images()])
    )


@pytest.mark.parametrize(
    ("variant", "size"), [("T", 224), ("S", 224), ("B", 224), ("L", 224), ("T", 384)]
)
def test_same_function_as_official_structure(photo_dir, variant, size):
    torch.manual_seed(0)
    ref = randomize_(reference_model(variant), seed=hash((variant, size)) % 1000)
    x = photos(photo_dir, size, 3)
    with torch.no_grad():
        expected = ref(x)
    assert expected.std() > 0.1  # the random weights give non-degenerate logits
    for form in FORMS:
        model = create_model(variant, size, form=form)
        load_official_into(model, ref.state_dict())
        with torch.no_grad():
            got = model(x)
        assert (got - expected).abs().max().item() <= 1e-4, form
        assert torch.equal(got.argmax(1), expected.argmax(1)), form


def test_custom_config_matches_reference():
    config = {"embed_dims": [16, 32, 48, 64], "num_heads": [2, 2, 4, 4], "depths": [2, 1, 1, 2],
              "sr_ratios": [4, 2, 2, 1], "num_classes": 7}  # fmt: skip
    ref = randomize_(reference_model("custom", **config), seed=5)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = ref(x)
    for form in FORMS:
        model = create_model(config, 96, form=form)
        load_official_into(model, ref.state_dict())
        with torch.no_grad():
            assert (model(x) - expected).abs().max().item() <= 1e-5


def test_official_layout_round_trips_exactly():
    ref = randomize_(reference_model("T"), seed=2)
    for form in FORMS:
        model = create_model("T", 224, form=form)
        load_official_into(model, ref.state_dict())
        back = official_state_dict(model)
        assert back.keys() == ref.state_dict().keys()
        for key, value in ref.state_dict().items():
            assert torch.equal(back[key], value), key
        other = with_form(model, "native" if form == "decomposed" else "decomposed")
        assert all(torch.equal(official_state_dict(other)[k], v) for k, v in back.items())


@pytest.mark.parametrize("form", FORMS)
def test_folded_attention_scale_is_the_same_function(form):
    model = randomize_(create_model(TINY_CONFIG, TINY_IMAGE_SIZE, form=form), seed=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_attention_scale(RawInput(model, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)))
    x = torch.rand(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE) * 255
    with torch.no_grad():
        expected = RawInput(model, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25))(x)
        assert (folded(x) - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # a copy
    scaled = [m for m in folded.modules() if getattr(m, "q_prescaled", False)]
    assert len(scaled) == sum(len(stage) for stage in model.stages)
    assert fold_attention_scale(folded).state_dict().keys() == folded.state_dict().keys()


def _all_shapes(program: torch.export.ExportedProgram):
    for node in program.graph.nodes:
        val = node.meta.get("val")
        vals = val if isinstance(val, (list, tuple)) else [val]
        for item in vals:
            if isinstance(item, torch.Tensor):
                yield node, tuple(item.shape)


@pytest.mark.parametrize("form", FORMS)
def test_exported_graph_is_static_and_rank4(form):
    """torch.export graph: every tensor rank <= 4, every shape a constant, no sym_size.

    The decomposed form stays rank <= 4 even after core-ATen decomposition (what ExecuTorch
    lowers). The native forms keep ``aten.pixel_shuffle`` as one op for the targets' native
    depth-to-space; only its core-ATen decomposition would introduce 6-D views. The
    convtranspose form has no pixel shuffle at all, the decomposed one writes it in rank 4.
    """
    model = create_model("T", 224, form=form)
    program = torch.export.export(model, (torch.randn(1, 3, 224, 224),))
    graphs = [program] + ([program.run_decompositions()] if form == "decomposed" else [])
    for graph in graphs:
        shapes = list(_all_shapes(graph))
        assert len(shapes) > 100
        for node, shape in shapes:
            assert len(shape) <= 4, f"{node.name} ({node.target}) has rank {len(shape)}"
            assert all(isinstance(d, int) for d in shape), f"{node.name} has symbolic {shape}"
        targets = [str(node.target) for node in graph.graph.nodes]
        assert not any("sym_size" in t for t in targets)
        shuffles = form not in ("decomposed", "native-convtranspose")
        assert any("pixel_shuffle" in t for t in targets) == shuffles
        # the batched form's one-head stage stacks K and V twice; no other form stacks
        assert any("stack" in t for t in targets) == (form == "native-onehead-batched")


def test_no_reshape_depends_on_input_batch():
    """Eager mode takes any batch: reshapes never bake in the batch size."""
    for form in FORMS:
        model = create_model("T", 64, num_classes=5, form=form)
        for batch in (1, 3):
            assert model(torch.randn(batch, 3, 64, 64)).shape == (batch, 5)


def test_raw_input_folds_normalization(photo_dir):
    model = randomize_(create_model("T", 224), seed=4)
    pre = model.preprocessing
    source = open_unlabelled(photo_dir).subset(2)
    raw = np.stack([resize_and_crop(img, pre) for _, _, img in source.iter_images()])
    normalized = torch.from_numpy(np.stack([preprocess_image(img, pre) for _, _, img in
                                            source.iter_images()]))  # fmt: skip
    raw_t = torch.from_numpy(raw).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        a = RawInput(model, pre.mean, pre.std)(raw_t)
        b = model(normalized)
    assert (a - b).abs().max().item() <= 1e-4


def test_preprocessing_matches_independent_steps(photo_dir):
    """Shorter side to 256 (bicubic), center 224 crop, ImageNet mean/std -- done by hand."""
    from PIL import Image

    path = sorted(photo_dir.iterdir())[7]
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    resized = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255
    expected = ((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    got = preprocess_image(image, Preprocessing(224))
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_non_square_classifier_matches_reference():
    """(height, width) sizes build their grids per side; the classifier pools them all."""
    ref = randomize_(reference_model("custom", **TINY_CONFIG), seed=6)
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
    for form in FORMS:
        model = create_model(TINY_CONFIG, (96, 160), form=form)
        assert model.input_hw == (96, 160) and model.image_size == (96, 160)
        assert model.preprocessing is None  # the square eval transform does not apply
        load_official_into(model, ref.state_dict())
        with torch.no_grad():
            assert (model(x) - expected).abs().max().item() <= 1e-5


def test_image_sizes_int_or_height_width():
    from restv2_edge.config import check_image_size, format_image_size
    from restv2_edge.errors import ConfigError

    assert check_image_size(224) == 224 and check_image_size((384, 640)) == (384, 640)
    square = create_model(TINY_CONFIG, (64, 64))
    assert square.image_size == 64 and square.input_hw == (64, 64)  # square stays an int
    assert square.preprocessing.image_size == 64
    assert format_image_size((384, 640)) == "384x640" and format_image_size(224) == "224"
    with pytest.raises(ConfigError, match=r"multiple of 32 in 64\.\.4096, got 100$"):
        check_image_size(100)
    for bad in [(96, 100), (32, 64), (96,), (96, 160, 3), (True, 64), (96.0, 160)]:
        with pytest.raises(ConfigError, match="two multiples of 32"):
            check_image_size(bad)
