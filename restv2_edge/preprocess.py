"""The standard eval transform, without torchvision: PIL resize + center crop + normalize."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from restv2_edge.config import MAX_IMAGE_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model input.

    The image is resized (shorter side to ``image_size / crop_pct``, bicubic), center-cropped to
    ``image_size``, then each channel becomes ``(rgb_uint8 * scale - mean) / std``.
    """

    image_size: int = 224
    crop_pct: float = DEFAULT_CROP_PCT
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    scale: float = field(default=1.0 / 255.0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)

    def resize_size(self) -> int:
        return int(np.floor(self.image_size / self.crop_pct))

    def problems(self) -> list[str]:
        """What makes this preprocessing unusable (empty: fine); callers raise their own error.

        A zero or non-finite std, say, would write infinities into every input.
        """
        found = []
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            found.append(f"image_size must be an integer (got {self.image_size!r})")
        elif not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            found.append(f"image_size must be 1..{MAX_IMAGE_SIZE} (got {self.image_size})")
        if not _finite_number(self.crop_pct) or not 0 < self.crop_pct <= 1:
            found.append(f"crop_pct must be in (0, 1] (got {self.crop_pct!r})")
        if not _finite_number(self.scale) or self.scale <= 0:
            found.append(f"scale must be a positive number (got {self.scale!r})")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != 3 or not all(_finite_number(v) for v in values):
                found.append(f"{key} must be three finite numbers (got {list(values)!r})")
            elif key == "std" and min(values) <= 0:
                found.append(f"std must be positive (got {list(values)!r})")
        if self.interpolation not in _RESAMPLE:
            found.append(
                f"interpolation must be one of {', '.join(_RESAMPLE)} (got {self.interpolation!r})"
            )
        return found

    def raw(self) -> Preprocessing:
        """The same geometry for a model that normalizes inside (input is rgb 0-255)."""
        return Preprocessing(
            self.image_size,
            self.crop_pct,
            (0.0, 0.0, 0.0),
            (1.0, 1.0, 1.0),
            self.interpolation,
            1.0,
        )


_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
#: the resampling filters a Preprocessing may name
INTERPOLATIONS = tuple(_RESAMPLE)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """RGB image -> (S, S, 3) uint8: shorter side to image_size/crop_pct, center crop."""
    image = image.convert("RGB")
    width, height = image.size
    short = pre.resize_size()
    if width <= height:
        new_w, new_h = short, max(1, int(round(short * height / width)))
    else:
        new_w, new_h = max(1, int(round(short * width / height))), short
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), _RESAMPLE[pre.interpolation])
    size = pre.image_size
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def normalize(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float32 per the preprocessing's scale/mean/std."""
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    x = (pixels.astype(np.float32) * np.float32(pre.scale) - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_image(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """PIL image -> (3, S, S) float32 model input."""
    return normalize(resize_and_crop(image, pre), pre)
