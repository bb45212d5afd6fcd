"""Building models: variant/config + resolution (+ weights) -> export-friendly ResTv2."""

from __future__ import annotations

import os
from typing import Any

from restv2_edge.checkpoint import (
    Checkpoint,
    checkpoint_output_norms,
    load_official_into,
    official_state_dict,
    read_checkpoint,
)
from restv2_edge.config import ImageSize, ModelConfig, check_image_size, resolve_config
from restv2_edge.labels import default_class_names
from restv2_edge.model import GraphForm, ResTV2
from restv2_edge.preprocess import Preprocessing

DEFAULT_VARIANT = "T"
DEFAULT_IMAGE_SIZE = 224


def create_model(
    variant: str | ModelConfig | dict[str, Any] | None = None,
    image_size: ImageSize | None = None,
    num_classes: int | None = None,
    weights: str | os.PathLike[str] | Checkpoint | None = None,
    form: GraphForm | str = GraphForm.NATIVE,
    head: str = "classifier",
) -> ResTV2:
    """Build a ResTv2 in eval mode for a fixed input resolution.

    ``variant``: "T"/"S"/"B"/"L", a ModelConfig or a dict (default "T"). ``weights``: an
    official checkpoint (.pth or .safetensors) or an own-format .safetensors; the own format
    rebuilds its model with no other argument. Without an own-format checkpoint, ``image_size``
    defaults to 224 and ``num_classes`` to 1000 (or the official checkpoint's head size).
    ``image_size``: one side or (height, width), multiples of 32.
    ``head`` "classifier": output logits. ``head`` "features": the four stage maps
    (docs/backbone.md); ``weights`` may then also be a detectron2 or mmseg checkpoint, and
    ``model.output_norms`` says whether its norm_1..norm_4 came with them ("checkpoint") or
    not ("identity", classification weights).
    Input: float32 NCHW RGB normalized with ``model.preprocessing``. The model carries
    ``class_names``, ``preprocessing`` (None for a non-square size: the square eval transform
    does not apply) and ``load_result`` (what the weights loaded, None without weights).
    """
    checkpoint = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    own = checkpoint is not None and checkpoint.is_own_format
    if own:
        config = checkpoint.config if variant is None else resolve_config(variant)
        image_size = image_size or checkpoint.image_size
    else:
        config = resolve_config(variant or DEFAULT_VARIANT)
    if num_classes is not None:
        config = config.replace(num_classes=num_classes)
    elif checkpoint is not None and not own and head == "classifier":
        head_weight = checkpoint.state_dict.get("head.weight")
        if head_weight is not None and head_weight.ndim == 2:
            config = config.replace(num_classes=int(head_weight.shape[0]))
    image_size = check_image_size(image_size or DEFAULT_IMAGE_SIZE)
    norms = "checkpoint"
    if head == "features" and checkpoint is not None:
        norms = checkpoint_output_norms(checkpoint.state_dict)

    model = ResTV2(config, image_size, form, head=head, output_norms=norms)
    model.load_result = None
    if checkpoint is not None:
        model.load_result = load_official_into(model, checkpoint.state_dict)
    names = checkpoint.class_names if own else default_class_names(config.num_classes)
    classifier = head == "classifier"
    model.class_names = list(names) if classifier and len(names) == config.num_classes else None
    base = checkpoint.preprocessing if own else Preprocessing()
    model.preprocessing = _preprocessing(base, model.image_size)
    return model.eval()


def _preprocessing(base: Preprocessing, image_size: ImageSize) -> Preprocessing | None:
    """The square eval transform at the model's size; None for a non-square size."""
    if not isinstance(image_size, int):
        return None
    return Preprocessing.from_dict({**base.to_dict(), "image_size": image_size})


def with_form(model: ResTV2, form: GraphForm | str) -> ResTV2:
    """The same weights rebuilt in another graph form (a converter's choice); the head, its
    output norms and the input size stay."""
    other = ResTV2(
        model.config,
        model.input_hw,
        form,
        head=model.head_type,
        output_norms=model.output_norms or "checkpoint",
    )
    load_official_into(other, official_state_dict(model))
    other.class_names = getattr(model, "class_names", None)
    default = _preprocessing(Preprocessing(), model.image_size)
    other.preprocessing = getattr(model, "preprocessing", default)
    other.load_result = getattr(model, "load_result", None)
    other.train(model.training)
    return other
