"""restv2-edge: ResTv2 image classifiers, exported for phones and edge devices.

``import restv2_edge`` imports no backend (and not even torch): everything is loaded lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def create_model(
    variant: Any = None,
    image_size: Any = None,
    num_classes: int | None = None,
    weights: Any = None,
    form: str = "native",
    head: str = "classifier",
) -> nn.Module:
    """Build an export-friendly ResTv2 in eval mode (see ``restv2_edge.factory.create_model``):
    ``image_size`` one side or (height, width); ``head`` "classifier" or "features"
    (the four stage maps, docs/backbone.md)."""
    from restv2_edge.factory import create_model as _create_model

    return _create_model(variant, image_size, num_classes, weights, form, head=head)


__all__ = ["__version__", "create_model"]
