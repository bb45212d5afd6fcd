"""`restv2-edge train` and `restv2-edge eval`: determinism, resume, bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, assert_one_line_error, run_cli
from PIL import Image

from restv2_edge.checkpoint import read_checkpoint
from restv2_edge.errors import DataError
from restv2_edge.evaluate import evaluate
from restv2_edge.factory import create_model
from restv2_edge.train import TrainSettings, train

CLASSES = ["blue", "red"]


def make_dataset(root, per_class=24, size=40, corrupt=0):
    """Two visually separable classes (reddish vs bluish noise), ImageFolder layout."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            pixels[..., 2 if name == "blue" else 0] += 130
            Image.fromarray(pixels).save(folder / f"{i:03d}.jpg")
        for i in range(corrupt if index == 0 else 0):
            (folder / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def settings(data, output, **changes):
    base = {"data": str(data), "output": str(output), "variant": TINY_CONFIG, "image_size": 64,
            "epochs": 2, "batch_size": 8, "lr": 2e-3, "warmup_epochs": 0.5, "seed": 7,
            "split": "train", "crop_pct": 1.0, "threads": 1}  # fmt: skip
    return TrainSettings(**{**base, **changes})


def weights(path):
    return read_checkpoint(path).state_dict


def test_training_is_deterministic_and_resumable(tmp_path):
    data = make_dataset(tmp_path / "data", corrupt=2)
    events = []
    first = train(settings(data, tmp_path / "a.safetensors"), events.append)
    second = train(settings(data, tmp_path / "b.safetensors"))
    a, b = weights(first), weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    data_event = next(e for e in events if e["event"] == "data")
    assert len(data_event["skipped"]) == 2 and data_event["images"] == 48

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Interrupt

    interrupted = settings(data, tmp_path / "c.safetensors")
    with pytest.raises(Interrupt):
        train(interrupted, stop_after_first_epoch)
    assert not (tmp_path / "c.safetensors").exists()  # no half-written checkpoint
    assert interrupted.state_path.exists()
    resumed = train(settings(data, tmp_path / "c.safetensors", resume=True))
    c = weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert not interrupted.state_path.exists()

    model = create_model(weights=first)
    assert model.class_names == CLASSES and model.image_size == 64
    assert model.config.num_classes == 2


def test_eval_checkpoint_and_labels(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=16)
    ckpt = train(settings(data, tmp_path / "m.safetensors", epochs=3))
    result = evaluate(ckpt, data, split="train")
    assert result["images"] == 32 and 0.0 <= result["top1"] <= result["top5"] == 1.0
    # labels that the model does not know are a clear error
    other = tmp_path / "other" / "train"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(other / name / "0.jpg")
    with pytest.raises(DataError, match="not among the model's labels"):
        evaluate(ckpt, tmp_path / "other", split="train")
    out = tmp_path / "eval.json"
    cli = run_cli("eval", ckpt, "--data", data, "--split", "train", "--json", out)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(out.read_text())["top1"] == pytest.approx(result["top1"])


def test_bad_datasets_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_cli("train", "--data", empty, "--output", out), "no images")
    data = make_dataset(tmp_path / "data", per_class=4)
    (data / "train" / "green").mkdir()
    result = run_cli("train", "--data", data, "--split", "train", "--output", out)
    assert_one_line_error(result, "green")
    broken = tmp_path / "broken" / "train" / "a"
    broken.mkdir(parents=True)
    (broken / "1.jpg").write_bytes(b"garbage")
    (tmp_path / "broken" / "train" / "b").mkdir()
    (tmp_path / "broken" / "train" / "b" / "1.jpg").write_bytes(b"garbage")
    result = run_cli("train", "--data", tmp_path / "broken", "--split", "train", "--output", out)
    assert_one_line_error(result, "no readable image")
    assert not out.exists()
