"""Model configurations: the published ResTv2 variants and custom configs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from restv2_edge.errors import ConfigError

#: the largest input side any command accepts (a 4096x4096 input is already 200 MB of floats)
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a ResTv2 network (everything but the input resolution)."""

    embed_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    num_heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    depths: tuple[int, int, int, int] = (1, 2, 6, 2)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    num_classes: int = 1000
    in_chans: int = 3

    def __post_init__(self) -> None:
        for name in ("embed_dims", "num_heads", "depths", "sr_ratios"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 4 or min(value) < 1:
                raise ConfigError(f"{name} must be 4 positive integers, got {list(value)}")
            object.__setattr__(self, name, value)
        for dim, heads in zip(self.embed_dims, self.num_heads):
            if dim % heads:
                raise ConfigError(f"embed dim {dim} is not divisible by {heads} heads")
        if self.embed_dims[0] % 2:
            raise ConfigError("embed_dims[0] must be even (the conv stem halves it)")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


VARIANTS: dict[str, ModelConfig] = {
    "T": ModelConfig(depths=(1, 2, 6, 2)),
    "S": ModelConfig(depths=(1, 2, 12, 2)),
    "B": ModelConfig(depths=(1, 3, 16, 3)),
    "L": ModelConfig(
        embed_dims=(128, 256, 512, 1024), num_heads=(2, 4, 8, 16), depths=(2, 3, 16, 2)
    ),
}

# Published numbers (paper, Table 1): params (M), GMACs at 224 and 384, ImageNet top-1.
PUBLISHED = {
    "T": {"params_m": 30, "gmacs_224": 4.1, "gmacs_384": 12.7, "top1": 82.3},
    "S": {"params_m": 41, "gmacs_224": 6.0, "gmacs_384": 18.4, "top1": 83.2},
    "B": {"params_m": 56, "gmacs_224": 7.9, "gmacs_384": 24.3, "top1": 83.7},
    "L": {"params_m": 87, "gmacs_224": 13.8, "gmacs_384": 42.4, "top1": 84.2},
}


def resolve_config(variant: str | ModelConfig | dict[str, Any]) -> ModelConfig:
    """Turn a variant name, a config or a dict into a ModelConfig."""
    if isinstance(variant, ModelConfig):
        return variant
    if isinstance(variant, dict):
        data = dict(variant)
        base = data.pop("variant", None)
        return (resolve_config(base) if base else ModelConfig()).replace(**data)
    if isinstance(variant, str) and variant.upper() in VARIANTS:
        return VARIANTS[variant.upper()]
    raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def variant_name(config: ModelConfig) -> str | None:
    """The published variant a config equals (ignoring num_classes), else None."""
    for name, known in VARIANTS.items():
        if known.replace(num_classes=config.num_classes) == config:
            return name
    return None


#: an input size: one side (square) or (height, width)
ImageSize = int | tuple[int, int]


def _valid_side(side: Any) -> bool:
    return (
        not isinstance(side, bool)
        and isinstance(side, int)
        and 64 <= side <= MAX_IMAGE_SIZE
        and side % 32 == 0
    )


def check_image_size(image_size: ImageSize) -> ImageSize:
    """Input resolutions must be static multiples of 32, at least 64 (each side).

    An int is a square side and comes back as the same int; a (height, width) pair comes back
    as a tuple (strides 4..32 and the sr ratios need every side % 32 == 0).
    """
    if not isinstance(image_size, (tuple, list)):
        if not _valid_side(image_size):
            raise ConfigError(
                f"image size must be a multiple of 32 in 64..{MAX_IMAGE_SIZE}, got {image_size}"
            )
        return image_size
    if len(image_size) != 2 or not all(_valid_side(side) for side in image_size):
        raise ConfigError(
            f"image size (height x width) must be two multiples of 32 in 64..{MAX_IMAGE_SIZE},"
            f" got {format_image_size(image_size)}"
        )
    return (image_size[0], image_size[1])


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """A checked image size as (height, width)."""
    checked = check_image_size(image_size)
    return checked if isinstance(checked, tuple) else (checked, checked)


def canonical_image_size(image_size: ImageSize) -> ImageSize:
    """The int side for a square size, the (height, width) tuple otherwise: square models
    keep the int ``image_size`` every existing caller (manifest, preprocessing) reads."""
    height, width = image_hw(image_size)
    return height if height == width else (height, width)


def format_image_size(image_size: Any) -> str:
    """``224`` or ``384x640`` (height x width), the form ``--image-size`` takes."""
    if isinstance(image_size, (tuple, list)):
        return "x".join(str(side) for side in image_size)
    return str(image_size)
