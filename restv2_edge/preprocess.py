"""The standard eval transform, without torchvision: PIL resize + center crop + normalize."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

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
