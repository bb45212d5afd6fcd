"""Try bad inputs on every command, as a new user would, and print what each one got.

    python scripts/bad_inputs.py > docs/reliability-inputs.md

Exports a tiny random-weight ONNX artifact into a temporary folder, derives broken copies
of it, runs each case as a subprocess of the real console script and records: exit code,
the first ``error:`` line, whether a traceback appeared and whether anything new was
written. The table in docs/reliability.md is this script's output; the assertions behind
each row live in tests/test_hardening.py and the per-command tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "embed_dims": [16, 32, 64, 128],
    "num_heads": [1, 2, 4, 8],
    "depths": [1, 1, 2, 1],
    "sr_ratios": [8, 4, 2, 1],
    "num_classes": 10,
}


def cli(*args: object, cwd: Path, env: dict[str, str] | None = None):
    command = [sys.executable, "-m", "restv2_edge.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def edited(base: Path, name: str, change) -> Path:
    folder = base.parent / name
    shutil.copytree(base, folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data, folder)
    path.write_text(json.dumps(data))
    return folder


def main() -> int:
    from restv2_edge.data import default_photo_dir

    photos = default_photo_dir()
    photo = sorted(photos.iterdir())[0]
    work = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    try:
        ckpt = work / "tiny.safetensors"
        labelled = work / "labelled"
        for index, source in enumerate(sorted(photos.iterdir())[:20]):
            target = labelled / f"class{index % 2}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        made = cli("train", "--data", labelled, "--variant", json.dumps(TINY), "--image-size", 64,
                   "--crop-pct", 1.0, "--epochs", 1, "--batch-size", 8, "--output", ckpt,
                   cwd=work)  # fmt: skip
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr)
            return 1
        art = work / "art"
        if cli("export", "--target", "onnx", "--weights", ckpt, "--output", art,
               cwd=work).returncode:  # fmt: skip
            return 1
        outside = work / "outside.onnx"
        shutil.copyfile(art / "model.onnx", outside)
        absolute = edited(art, "abs", lambda m, f: m.update(model_file=str(outside)))
        dotdot = edited(art, "dotdot", lambda m, f: m["files"][0].update(path="../art/model.onnx"))
        big = edited(art, "big", lambda m, f: m.update(image_size="big"))
        negative = edited(art, "negative", lambda m, f: m.update(image_size=-64))
        labels = edited(art, "labels", lambda m, f: m.update(labels=5))
        newer = edited(art, "newer", lambda m, f: m.update(format_version=2))

        def link(m, f):
            (f / "model.onnx").unlink()
            (f / "model.onnx").symlink_to(outside)

        linked = edited(art, "linked", link)
        extra = edited(art, "extra", lambda m, f: (f / "notes.txt").write_text("unlisted"))
        bomb = work / "bomb.png"
        Image.new("1", (20000, 20000)).save(bomb)
        blocker = work / "a-file"
        blocker.write_text("x")
        existing = work / "existing"
        existing.mkdir()
        cases = [
            ("predict: model_file absolute", ["predict", absolute, photo]),
            ("eval: model_file absolute", ["eval", absolute, "--data", photos, "--limit", 2]),
            ("golden: model_file absolute", ["golden", absolute, "--output", work / "g1"]),
            ("bench: model_file absolute", ["bench", absolute, "--runs", 1, "--no-memory"]),
            ("predict: files path with ..", ["predict", dotdot, photo]),
            ("predict: model file is a symlink", ["predict", linked, photo]),
            ("predict: unlisted extra file", ["predict", extra, photo]),
            ('predict: "image_size": "big"', ["predict", big, photo]),
            ("bench: image_size -64", ["bench", negative, "--runs", 1, "--no-memory"]),
            ("predict: labels not a list", ["predict", labels, photo]),
            ("predict: format_version 2", ["predict", newer, photo]),
            ("predict: 20000x20000 PNG", ["predict", art, bomb]),
            ("parity --json unwritable", ["parity", art, "--weights", ckpt, "--json",
                                          blocker / "r.json"]),
            ("bench --json unwritable", ["bench", art, "--json", blocker / "r.json"]),
            ("train --output unwritable", ["train", "--data", photos, "--output",
                                           blocker / "m.safetensors"]),
            ("train --batch-size 0", ["train", "--data", photos, "--output", "m.st",
                                      "--batch-size", 0]),
            ("train --lr nan", ["train", "--data", photos, "--output", "m.st", "--lr", "nan"]),
            ("train --epochs 0", ["train", "--data", photos, "--output", "m.st", "--epochs", 0]),
            ("export --image-size 100000", ["export", "--target", "onnx", "--image-size",
                                            100000]),
            ("export --max-drop nan", ["export", "--target", "onnx", "--weights", ckpt, "--int8",
                                       "--calib-data", photos, "--max-drop", "nan"]),
            ("export --calib without --int8", ["export", "--target", "onnx", "--weights", ckpt,
                                               "--calib", work]),
            ("export --deployment-target off Core ML", ["export", "--target", "onnx",
                                                        "--weights", ckpt,
                                                        "--deployment-target", "iOS16"]),
            ("export --int8 --calib-method off ONNX", ["export", "--target", "openvino",
                                                       "--weights", ckpt, "--int8",
                                                       "--calib-data", photos,
                                                       "--calib-method", "minmax"]),
            ("export --batch 0", ["export", "--target", "onnx", "--weights", ckpt, "--batch",
                                  0]),
            ("export --dynamic-batch off onnx/openvino/coreml", ["export", "--target",
                                                                 "executorch", "--weights", ckpt,
                                                                 "--dynamic-batch"]),
            ("export --image-size 100x640", ["export", "--target", "onnx", "--weights", ckpt,
                                             "--image-size", "100x640"]),
            ("export --head logits", ["export", "--target", "onnx", "--weights", ckpt,
                                      "--head", "logits"]),
            ("export --compute-units off Core ML", ["export", "--target", "onnx", "--weights",
                                                    ckpt, "--compute-units", "ALL"]),
            ("export --compute-units GPU", ["export", "--target", "coreml", "--weights", ckpt,
                                            "--compute-units", "GPU"]),
            ("export to an existing folder", ["export", "--target", "onnx", "--weights", ckpt,
                                              "--output", existing]),
            ("calibrate to an existing folder", ["calibrate", "--data", photos, "--size", 2,
                                                 "--output", existing]),
            ("calibrate --std 0,0,0", ["calibrate", "--data", photos, "--std", "0,0,0",
                                       "--output", "c"]),
            ("predict --top 0", ["predict", art, photo, "--top", 0]),
            ("predict --device NPU (onnx)", ["predict", art, photo, "--device", "NPU"]),
            ("parity --device TPU (onnx)", ["parity", art, "--weights", ckpt, "--device",
                                            "TPU"]),
            ("parity --limit 0", ["parity", art, "--weights", ckpt, "--limit", 0]),
            ("eval --limit -1", ["eval", art, "--data", photos, "--limit", -1]),
            ("eval --ray not-an-address", ["eval", art, "--data", photos, "--ray",
                                          "not an address"]),
            ("eval --ray before the artifact", ["eval", "--ray", art, "--data", photos]),
            ("eval --shard-size 0", ["eval", art, "--data", photos, "--shard-size", 0]),
            ("eval --retries -1", ["eval", art, "--data", photos, "--retries", -1]),
            ("profile --runs 0", ["profile", art, "--runs", 0]),
            ("profile --top 0", ["profile", art, "--top", 0]),
            ("profile a folder with no manifest", ["profile", work]),
            ("export --precision bf16 (onnx)", ["export", "--target", "onnx", "--weights", ckpt,
                                                "--precision", "bf16"]),
        ]  # fmt: skip
        print("| bad input | exit | what the user sees | traceback | new files |")
        print("|---|---|---|---|---|")
        for label, args in cases:
            before = snapshot(work)
            result = cli(*args, cwd=work)
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            line = errors[0] if errors else "(no error line)"
            line = line.replace(str(work), "…").replace("|", "\\|")
            if len(line) > 150:
                line = line[:147] + "..."
            new = sorted(snapshot(work) - before)
            print(
                f"| {label} | {result.returncode} | `{line}` | "
                f"{'yes' if 'Traceback' in result.stderr else 'no'} | "
                f"{', '.join(new) if new else 'none'} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
