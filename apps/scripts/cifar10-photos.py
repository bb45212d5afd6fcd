#!/usr/bin/env python3
"""Real photos of the CIFAR-10 classes, taken from the shared ImageNet sample.

    python3 apps/scripts/cifar10-photos.py pick OUT_DIR [--data FOLDER]   # one photo per class
    python3 apps/scripts/cifar10-photos.py list [--data FOLDER]           # every mapped photo
    python3 apps/scripts/cifar10-photos.py score PREDICTIONS [--data FOLDER]

The CIFAR-10 fixture (tests/fixtures/restv2_cifar10.safetensors) knows ten classes; the ImageNet
sample (one photo per even ImageNet class index) holds photos of eight of them. Which ImageNet
classes count as which CIFAR-10 class is the table cifar10-imagenet.tsv beside this script.
`pick` links, for each CIFAR-10 class in label order, the first photo of the sample (by file
name) whose ImageNet class maps to it into OUT_DIR: chosen by that rule, not by how the model
answers. `score` reads `restv2-edge predict --json` output for the `list` photos and counts how
often the top-1 label is the photo's CIFAR-10 class. FOLDER defaults to the shared data's
imagenet-sample/images. The photos are linked, never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "cifar10-imagenet.tsv"


def read_table(path: Path = TABLE) -> list[tuple[str, str]]:
    """(cifar10 class, ImageNet synset) pairs, in the table's order."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("cifar10\t") or not line.strip():
            continue
        cifar, _index, synset, _name = line.split("\t")
        rows.append((cifar, synset))
    return rows


def mapped_photos(folder: Path) -> dict[Path, str]:
    """Every photo of ``folder`` whose ImageNet class maps to a CIFAR-10 class -> that class."""
    by_synset = {synset: cifar for cifar, synset in read_table()}
    found = {}
    for photo in sorted(folder.iterdir()):
        synset = photo.name.split("_", 1)[0]
        if photo.is_file() and synset in by_synset:
            found[photo] = by_synset[synset]
    return found


def pick(folder: Path, out: Path) -> list[Path]:
    """Link the first mapped photo of each CIFAR-10 class into ``out`` (a new folder)."""
    first: dict[str, Path] = {}
    for photo, cifar in mapped_photos(folder).items():
        first.setdefault(cifar, photo)
    order = list(dict.fromkeys(cifar for cifar, _ in read_table()))
    out.mkdir(parents=True)
    links = []
    for cifar in order:
        if cifar in first:
            link = out / first[cifar].name
            link.symlink_to(first[cifar].resolve())
            links.append(link)
            print(f"{cifar}: {first[cifar].name}")
    missing = [cifar for cifar in order if cifar not in first]
    if missing:
        print(f"no photo in {folder} for: {', '.join(missing)}")
    return links


def score(folder: Path, predictions: Path) -> dict[str, list[int]]:
    """Per CIFAR-10 class [correct, total] of the top-1 labels in ``predictions``."""
    data = json.loads(predictions.read_text())
    answers = {Path(path).name: top[0]["label"] for path, top in data.items()}
    counts: dict[str, list[int]] = {}
    for photo, cifar in mapped_photos(folder).items():
        if photo.name not in answers:
            raise SystemExit(f"error: {predictions} has no prediction for {photo.name}")
        tally = counts.setdefault(cifar, [0, 0])
        tally[0] += answers[photo.name] == cifar
        tally[1] += 1
    return counts


def default_folder() -> Path:
    from restv2_edge.data import shared_data_root

    return shared_data_root() / "imagenet-sample" / "images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["pick", "list", "score"])
    parser.add_argument("path", type=Path, nargs="?", help="pick: OUT_DIR; score: PREDICTIONS")
    parser.add_argument("--data", type=Path, default=None, help="photo folder")
    args = parser.parse_args(argv)
    folder = args.data or default_folder()
    if not folder.is_dir():
        print(f"error: no photos at {folder} (set RESTV2_EDGE_DATA or --data)", file=sys.stderr)
        return 1
    if args.command != "list" and args.path is None:
        parser.error(f"{args.command} needs a path")
    if args.command == "pick":
        if args.path.exists():
            print(f"error: {args.path} exists", file=sys.stderr)
            return 1
        return 0 if pick(folder, args.path) else 1
    if args.command == "list":
        for photo in mapped_photos(folder):
            print(photo)
        return 0
    counts = score(folder, args.path)
    for cifar in dict.fromkeys(cifar for cifar, _ in read_table()):
        if cifar in counts:
            print(f"{cifar:<11} {counts[cifar][0]:>3} / {counts[cifar][1]}")
    right = sum(c[0] for c in counts.values())
    total = sum(c[1] for c in counts.values())
    print(f"top-1 = the photo's CIFAR-10 class for {right} of {total} photos ({right / total:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
