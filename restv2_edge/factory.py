"""Building models: variant/config + resolution (+ weights) -> export-friendly ResTv2."""

from __future__ import annotations

import os
from typing import Any

from restv2_edge.checkpoint import (
    Checkpoint,
    load_official_into,
    official_state_dict,
    read_checkpoint,
)
from restv2_edge.config import ModelConfig, check_image_size, resolve_config
from restv2_edge.labels import default_class_names
from restv2_edge.model import GraphForm, ResTV2
from restv2_edge.preprocess import Preprocessing

DEFAULT_VARIANT = "T"
DEFAULT_IMAGE_SIZE = 224


def create_model(
    variant: str | ModelConfig | dict[str, Any] | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    weights: str | os.PathLike[str] | Checkpoint | None = None,
    form: GraphForm | str = GraphForm.NATIVE,
) -> ResTV2:
    """Build a ResTv2 in eval mode for a fixed input resolution.

    ``variant``: "T"/"S"/"B"/"L", a ModelConfig or a dict (default "T"). ``weights``: an
    official checkpoint (.pth or .safetensors) or an own-format .safetensors; the own format
    rebuilds its model with no other argument. Without an own-format checkpoint, ``image_size``
    defaults to 224 and ``num_classes`` to 1000 (or the official checkpoint's head size).
    Input: float32 NCHW RGB normalized with ``model.preprocessing``; output: logits.
    The model carries ``class_names`` and ``preprocessing`` attributes.
    """
    checkpoint = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    if checkpoint is not None and checkpoint.is_own_format:
        config = checkpoint.config if variant is None else resolve_config(variant)
        image_size = image_size or checkpoint.image_size
    else:
        config = resolve_config(variant or DEFAULT_VARIANT)
    if num_classes is not None:
        config = config.replace(num_classes=num_classes)
    elif checkpoint is not None and not checkpoint.is_own_format:
        head = checkpoint.state_dict.get("head.weight")
        if head is not None and head.ndim == 2:
            config = config.replace(num_classes=int(head.shape[0]))
    image_size = check_image_size(image_size or DEFAULT_IMAGE_SIZE)

    model = ResTV2(config, image_size, form)
    if checkpoint is not None:
        load_official_into(model, checkpoint.state_dict)
    own = checkpoint is not None and checkpoint.is_own_format
    names = checkpoint.class_names if own else default_class_names(config.num_classes)
    model.class_names = list(names) if len(names) == config.num_classes else None
    base = checkpoint.preprocessing if own else Preprocessing()
    model.preprocessing = Preprocessing.from_dict({**base.to_dict(), "image_size": image_size})
    return model.eval()


def with_form(model: ResTV2, form: GraphForm | str) -> ResTV2:
    """The same weights rebuilt in another graph form (a converter's choice)."""
    other = ResTV2(model.config, model.image_size, form)
    load_official_into(other, official_state_dict(model))
    other.class_names = getattr(model, "class_names", None)
    other.preprocessing = getattr(model, "preprocessing", Preprocessing(model.image_size))
    other.train(model.training)
    return other
