"""Reader for the MIL blob storage file (``weights/weight.bin`` inside an .mlpackage).

Layout (coremltools ``MILBlob/Blob/StorageFormat.hpp``), little-endian, every record 64-byte
aligned:

- storage header (64 bytes): ``uint32 count``, ``uint32 version`` (= 2), reserved.
- per blob, at the offset a ``blobFileValue`` names: metadata (64 bytes) ``uint32 sentinel``
  (0xDEADBEEF), ``uint32 dtype``, ``uint64 size_in_bytes``, ``uint64 data_offset``, reserved;
  the raw data lies at ``data_offset``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from restv2_edge.converters.mil.errors import MILError

SENTINEL = 0xDEADBEEF
HEADER = struct.Struct("<II")
METADATA = struct.Struct("<IIQQ")
METADATA_BYTES = 64

#: BlobDataType codes -> numpy dtype of the stored elements (bfloat16 is stored as uint16)
BLOB_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("u1"),
    4: np.dtype("i1"),
    5: np.dtype("<u2"),  # bfloat16
    6: np.dtype("<i2"),
    7: np.dtype("<u2"),
}
BLOB_NAMES = {1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16"}


class BlobFile:
    """One weight file, read once; ``read`` returns a copy of one blob."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise MILError(f"cannot read weight file {self.path}: {exc.strerror or exc}") from None
        if len(self.data) < METADATA_BYTES:
            raise MILError(f"{self.path}: too short for a MIL blob storage file")
        self.count, self.version = HEADER.unpack_from(self.data, 0)
        if self.version != 2:
            raise MILError(f"{self.path}: blob storage version {self.version}, expected 2")

    def read(self, offset: int, dtype_code: int, count: int) -> np.ndarray:
        """The ``count`` elements of the blob whose metadata starts at ``offset``."""
        if offset % 64 or offset + METADATA_BYTES > len(self.data):
            raise MILError(f"{self.path}: bad blob offset {offset}")
        sentinel, code, size, data_offset = METADATA.unpack_from(self.data, offset)
        if sentinel != SENTINEL:
            raise MILError(f"{self.path}: no blob metadata at offset {offset} (bad sentinel)")
        if code != dtype_code:
            raise MILError(
                f"{self.path}: blob at {offset} holds {BLOB_NAMES.get(code, code)}, "
                f"the program expects {BLOB_NAMES.get(dtype_code, dtype_code)}"
            )
        dtype = BLOB_DTYPES[code]
        if size != count * dtype.itemsize or data_offset + size > len(self.data):
            raise MILError(
                f"{self.path}: blob at {offset} has {size} bytes, "
                f"the program expects {count} x {dtype.itemsize}"
            )
        return np.frombuffer(self.data, dtype, count, data_offset).copy()


def blob_code(dtype_name: str) -> int:
    """BlobDataType code of a MIL dtype name (fp16, fp32, int8, ...)."""
    for code, name in BLOB_NAMES.items():
        if name == dtype_name:
            return code
    raise MILError(f"MIL dtype {dtype_name} cannot be stored in a weight blob here")
