"""Class names: ImageNet-1k ships with the package; fine-tuned models carry their own."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard (sorted-synset) index order."""
    text = resources.files("restv2_edge.resources").joinpath("imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, "packaged imagenet_classes.txt is damaged"
    return names


def default_class_names(num_classes: int) -> list[str]:
    """ImageNet names for 1000-class models, else numbered placeholders."""
    if num_classes == 1000:
        return list(imagenet_classes())
    return [f"class_{index}" for index in range(num_classes)]
