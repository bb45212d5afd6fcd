"""Image sources: folders and tars, labelled (ImageFolder layout) or not.

Layouts understood:
- ImageFolder: ``root/<class>/<image>``, or ``root/<split>/<class>/<image>`` with ``split``.
- A tar of ``<split>/<class>/<image>`` (e.g. ``cifar10/test.tar``).
- The shared ImageNet sample: flat ``<synset>_<name>.JPEG`` files with a ``classes.tsv``
  beside the images folder (labels come from the synset).
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from restv2_edge.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
DATA_ENV = "RESTV2_EDGE_DATA"


def shared_data_root() -> Path:
    """``$RESTV2_EDGE_DATA``, else ``../shared/data`` beside the checkout (or the cwd)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    checkout = Path(__file__).resolve().parent.parent
    for base in (checkout, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return checkout.parent / "shared" / "data"


def default_photo_dir() -> Path:
    return shared_data_root() / "imagenet-sample" / "images"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class ImageSource:
    """A set of images in a folder or tar, with optional class labels.

    ``items`` are (key, label index or -1); ``read(key)`` returns the raw bytes.
    """

    location: Path
    items: list[tuple[str, int]]
    class_names: list[str] = field(default_factory=list)
    _tar_bytes: dict[str, bytes] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def read(self, key: str) -> bytes:
        if self._tar_bytes is not None:
            return self._tar_bytes[key]
        return (self.location / key).read_bytes()

    def open(self, key: str, upright: bool = True) -> Image.Image:
        """Decode one image as RGB, turned upright per its EXIF orientation (as the apps and
        phone galleries show it) unless ``upright`` is False; a corrupt file raises DataError."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(self.read(key))) as image:
                    image.load()
                    rgb = image.convert("RGB")
                    return upright_image(rgb, image.getexif().get(0x0112)) if upright else rgb
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DataError(
                f"image {key} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} "
                "pixels: a decompression bomb or a photo to downscale first)"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"unreadable image {key}: {exc}") from None

    def subset(self, limit: int | None) -> ImageSource:
        """At most ``limit`` items, evenly spaced over the (class-sorted) list: deterministic."""
        if not limit or limit >= len(self.items):
            return self
        step = len(self.items) / limit
        items = [self.items[int(index * step)] for index in range(limit)]
        return ImageSource(self.location, items, self.class_names, self._tar_bytes)

    def iter_images(
        self, limit: int | None = None
    ) -> Iterator[tuple[str, int, Image.Image | None]]:
        """Yield (key, label, image or None when corrupt) in a stable order."""
        for key, label in self.items[:limit]:
            try:
                yield key, label, self.open(key)
            except DataError:
                yield key, label, None


def _members_from_tar(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path) as archive:
            return {
                member.name.lstrip("./"): archive.extractfile(member).read()
                for member in archive.getmembers()
                if member.isfile() and is_image_name(member.name)
            }
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"unreadable tar {path}: {exc}") from None


def _pick_split(keys: list[str], split: str | None, where: Path) -> str:
    """The top-level prefix to use: the requested split, or the only top-level folder."""
    tops = sorted({key.split("/", 1)[0] for key in keys if "/" in key})
    if split is not None:
        if split not in tops:
            raise DataError(f"{where}: no split {split!r} (found: {', '.join(tops) or 'none'})")
        return split
    if len(tops) == 1 and all(key.count("/") >= 2 for key in keys):
        return tops[0]
    return ""


def _labelled(
    location: Path, keys: list[str], split: str | None, tar: dict[str, bytes] | None
) -> ImageSource:
    prefix = _pick_split(keys, split, location)
    if prefix:
        keys = [key for key in keys if key.startswith(prefix + "/")]
    strip = len(prefix) + 1 if prefix else 0
    by_class: dict[str, list[str]] = {}
    for key in keys:
        parts = key[strip:].split("/")
        if len(parts) != 2:
            raise DataError(f"{location}: {key} is not in a <class>/<image> layout")
        by_class.setdefault(parts[0], []).append(key)
    if not by_class:
        raise DataError(f"{location}: no images found")
    classes = sorted(by_class)
    items = [(key, index) for index, name in enumerate(classes) for key in sorted(by_class[name])]
    return ImageSource(location, items, classes, tar)


def _imagenet_sample(folder: Path, classes_tsv: Path) -> ImageSource:
    synsets: dict[str, int] = {}
    names: list[str] = []
    for line in classes_tsv.read_text().splitlines()[1:]:
        index, synset, name = line.split("\t")
        synsets[synset] = int(index)
        names.append(name)
    items = []
    for path in sorted(folder.iterdir()):
        if is_image_name(path.name):
            label = synsets.get(path.name.split("_", 1)[0], -1)
            items.append((path.name, label))
    return ImageSource(folder, items, names)


def open_labelled(path: str | os.PathLike[str], split: str | None = None) -> ImageSource:
    """Labelled images from an ImageFolder directory, a tar, or the ImageNet sample."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.is_file():
        tar = _members_from_tar(path)
        source = _labelled(path, sorted(tar), split, tar)
    else:
        tsv = path.parent / "classes.tsv"
        if tsv.is_file() and any(is_image_name(p.name) for p in path.iterdir()):
            source = _imagenet_sample(path, tsv)
        else:
            keys = _walk(path)
            if not keys:
                raise DataError(f"{path}: no images found")
            source = _labelled(path, keys, split, None)
            _check_class_folders(path, source)
    if not source.items:
        raise DataError(f"{path}: no images found")
    return source


def _check_class_folders(path: Path, source: ImageSource) -> None:
    """A class folder without any image is a user error worth naming."""
    first = source.items[0][0]
    root = path / first.split("/", 1)[0] if first.count("/") >= 2 else path
    known = set(source.class_names)
    empty = [c.name for c in sorted(root.iterdir()) if c.is_dir() and c.name not in known]
    if empty:
        raise DataError(f"{path}: class folder(s) with no images: {', '.join(empty[:5])}")


def _walk(root: Path) -> list[str]:
    keys = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if is_image_name(name):
                keys.append(str((Path(dirpath) / name).relative_to(root)).replace(os.sep, "/"))
    return sorted(keys)


def open_unlabelled(path: str | os.PathLike[str]) -> ImageSource:
    """Every image file in a folder (recursively) or a tar, unlabelled, sorted by key."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"image folder not found: {path}")
    if path.is_file():
        if is_image_name(path.name):
            return ImageSource(path.parent, [(path.name, -1)])
        tar = _members_from_tar(path)
        keys = sorted(tar)
    else:
        tar = None
        keys = _walk(path)
    if not keys:
        raise DataError(f"{path}: no images found")
    return ImageSource(path, [(key, -1) for key in keys], [], tar)


def upright_image(image: Image.Image, orientation: int | None) -> Image.Image:
    """``image`` with EXIF orientation ``orientation`` (tag 0x0112, 1-8) undone: an exact
    pixel permutation (1, missing or invalid: unchanged)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation if isinstance(orientation, int) else 1)
    return image.transpose(method) if method is not None else image
