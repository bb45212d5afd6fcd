"""Training and fine-tuning on an ImageFolder directory or tar (``restv2-edge train``).

Images are decoded once, resized (shorter side to image_size/crop_pct, bicubic) and
center-cropped to a square, and kept as uint8. Each batch is augmented on the fly with one
batched ``grid_sample``: random resized crop (area and aspect jitter) + horizontal flip, which
suits 32-pixel CIFAR images upsampled to 64 as well as large photos. AdamW, linear warm-up +
cosine schedule per step, label smoothing. Every random draw comes from a generator seeded by
(seed, epoch), so a run resumed after epoch k continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from restv2_edge.checkpoint import read_checkpoint, save_checkpoint, strip_prefixes
from restv2_edge.config import resolve_config
from restv2_edge.data import ImageSource, open_labelled
from restv2_edge.errors import CheckpointError, ConfigError, DataError
from restv2_edge.factory import create_model
from restv2_edge.model import ResTV2
from restv2_edge.preprocess import Preprocessing, normalize, resize_and_crop
from restv2_edge.publish import check_output, staged_file

Event = dict[str, Any]


@dataclass
class TrainSettings:
    data: str
    output: str
    variant: Any = "T"
    image_size: int = 224
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    min_scale: float = 0.25
    crop_pct: float = 0.875
    seed: int = 0
    split: str | None = None
    val_data: str | None = None
    val_split: str | None = None
    weights: str | None = None
    threads: int | None = None
    resume: bool = False
    limit: int | None = None
    force: bool = False

    def problems(self) -> list[str]:
        """Settings no training run can use (the CLI refuses them at parse time too)."""
        found = []
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                found.append(f"{key} must be at least 1 (got {getattr(self, key)})")
        for key in ("threads", "limit"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                found.append(f"{key} must be at least 1 (got {getattr(self, key)})")
        checks = {
            "lr": lambda v: v > 0,
            "weight_decay": lambda v: v >= 0,
            "warmup_epochs": lambda v: v >= 0,
            "label_smoothing": lambda v: 0 <= v < 1,
            "min_scale": lambda v: 0 < v <= 1,
            "crop_pct": lambda v: 0 < v <= 1,
        }
        for key, ok in checks.items():
            value = getattr(self, key)
            if not math.isfinite(value) or not ok(value):
                found.append(f"{key} {value!r} is out of range")
        return found

    @property
    def state_path(self) -> Path:
        return Path(str(self.output) + ".train-state.pt")


@dataclass
class DecodedImages:
    """Square uint8 images (N, R, R, 3) and labels, decoded once."""

    pixels: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: list[str]


def decode_dataset(
    source: ImageSource,
    pre: Preprocessing,
    limit: int | None = None,
    progress: Callable[[Event], None] | None = None,
) -> DecodedImages:
    """Decode, resize and center-crop every image to (R, R) with R = image_size / crop_pct."""
    square = Preprocessing.from_dict({**pre.to_dict(), "image_size": pre.resize_size()})
    source = source.subset(limit)
    items = source.items
    pixels = np.empty((len(items), square.image_size, square.image_size, 3), np.uint8)
    labels = np.empty(len(items), np.int64)
    kept, skipped = 0, []
    for index, (key, label, image) in enumerate(source.iter_images()):
        if image is None:
            skipped.append(key)
        else:
            pixels[kept] = resize_and_crop(image, square)
            labels[kept] = label
            kept += 1
        if progress and (index + 1) % 1000 == 0:
            progress({"event": "decode", "done": index + 1, "total": len(items)})
    if kept == 0:
        raise DataError(f"{source.location}: no readable image ({len(skipped)} corrupt)")
    return DecodedImages(pixels[:kept], labels[:kept], source.class_names, skipped)


def augment_batch(
    pixels: torch.Tensor, out_size: int, min_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """uint8 (B, R, R, 3) -> float (B, 3, S, S) in 0..255: random resized crop + flip."""
    batch = pixels.shape[0]
    x = pixels.permute(0, 3, 1, 2).float()
    area = torch.empty(batch).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(batch).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = log_ratio.exp()
    width = (area * ratio).sqrt().clamp(max=1.0)
    height = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [batch, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _normalize_tensor(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x * pre.scale - mean) / std


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(settings: TrainSettings, num_classes: int) -> ResTV2:
    """A fresh model, or one initialised from --weights with its head swapped if needed."""
    config = resolve_config(settings.variant).replace(num_classes=num_classes)
    model = create_model(config, settings.image_size)
    if settings.weights:
        checkpoint = read_checkpoint(settings.weights)
        state = strip_prefixes(checkpoint.state_dict)
        head = state.get("head.weight")
        if head is not None and head.shape[0] != num_classes:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        from restv2_edge.checkpoint import load_official_into

        load_official_into(model, state)
    return model


def evaluate_pixels(
    model: torch.nn.Module, images: DecodedImages, pre: Preprocessing, batch_size: int = 256
) -> float:
    """Top-1 accuracy with the eval transform (center crop of the cached square)."""
    model.eval()
    size = pre.image_size
    offset = (images.pixels.shape[1] - size) // 2
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images.labels), batch_size):
            crop = images.pixels[
                start : start + batch_size, offset : offset + size, offset : offset + size
            ]
            logits = model(torch.from_numpy(normalize(crop, pre)))
            correct += int(
                (logits.argmax(1).numpy() == images.labels[start : start + batch_size]).sum()
            )
    return correct / len(images.labels)


def train(settings: TrainSettings, progress: Callable[[Event], None] = lambda e: None) -> Path:
    """Train, writing a resumable state after every epoch and the final checkpoint atomically.

    The output is checked first (exists without ``force``, unwritable folder), so a bad path
    fails before the first epoch, not after the last.
    """
    if settings.problems():
        raise ConfigError(f"train: {settings.problems()[0]}")
    check_output(settings.output, settings.force)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    pre = Preprocessing(image_size=settings.image_size, crop_pct=settings.crop_pct)
    source = open_labelled(settings.data, settings.split)
    if len(source.class_names) < 2:
        raise DataError(
            f"{settings.data}: need at least 2 classes, found {len(source.class_names)}"
        )
    train_images = decode_dataset(source, pre, settings.limit, progress)
    progress(
        {
            "event": "data",
            "images": len(train_images.labels),
            "skipped": train_images.skipped,
            "classes": len(source.class_names),
        }
    )
    val_images = None
    if settings.val_data:
        val_source = open_labelled(settings.val_data, settings.val_split)
        if val_source.class_names != source.class_names:
            raise DataError("validation classes differ from training classes")
        val_images = decode_dataset(val_source, pre, None, progress)

    torch.manual_seed(settings.seed)
    model = build_model(settings, len(source.class_names))
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.999)
    )
    steps_per_epoch = len(train_images.labels) // settings.batch_size
    if steps_per_epoch == 0:
        raise DataError(f"{len(train_images.labels)} images are fewer than one batch")
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_epochs * steps_per_epoch)
    start_epoch, history = 0, []
    if settings.resume:
        start_epoch, history = _load_state(settings, model, optimizer)
        progress({"event": "resume", "epoch": start_epoch})

    pixels = torch.from_numpy(train_images.pixels)
    labels = torch.from_numpy(train_images.labels)
    for epoch in range(start_epoch, settings.epochs):
        generator = torch.Generator().manual_seed(settings.seed * 100003 + epoch)
        order = torch.randperm(len(labels), generator=generator)
        model.train()
        seen, loss_sum, correct, started = 0, 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = augment_batch(pixels[index], settings.image_size, settings.min_scale, generator)
            x = _normalize_tensor(x, pre)
            y = labels[index]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(
                    epoch * steps_per_epoch + step, total_steps, warmup, settings.lr
                )
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            progress(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": step + 1,
                    "steps": steps_per_epoch,
                    "loss": loss_sum / seen,
                    "acc": correct / seen,
                    "images_per_s": seen / (time.perf_counter() - started),
                }
            )
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "train_acc": correct / seen,
            "seconds": time.perf_counter() - started,
        }
        if val_images is not None:
            record["val_acc"] = evaluate_pixels(model, val_images, pre)
        history.append(record)
        _save_state(settings, model, optimizer, epoch + 1, history)
        progress({"event": "epoch", **record})

    model.eval()
    extra = {
        "train": {**asdict(settings), "history": history, "skipped": len(train_images.skipped)}
    }
    out = save_checkpoint(
        model, settings.output, source.class_names, pre, extra=extra, force=settings.force
    )
    settings.state_path.unlink(missing_ok=True)
    return out


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fingerprint(settings: TrainSettings) -> dict[str, Any]:
    keep = ("data", "variant", "image_size", "epochs", "batch_size", "lr", "seed", "split", "limit")
    return {key: str(getattr(settings, key)) for key in keep}


def _save_state(
    settings: TrainSettings,
    model: ResTV2,
    optimizer: Any,
    epoch: int,
    history: list[dict[str, Any]],
) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": history,
        "fingerprint": _fingerprint(settings),
    }
    with staged_file(settings.state_path, force=True) as tmp:
        torch.save(state, tmp)


def _load_state(settings: TrainSettings, model: ResTV2, optimizer: Any) -> tuple[int, list]:
    path = settings.state_path
    if not path.is_file():
        raise CheckpointError(f"--resume: no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"--resume: unreadable training state {path}: {exc}") from None
    if state.get("fingerprint") != _fingerprint(settings):
        raise CheckpointError(f"--resume: {path} was written by a run with other settings")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))
