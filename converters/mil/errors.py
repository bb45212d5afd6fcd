"""Errors of the MIL reference interpreter (subclasses of restv2_edge.errors.ArtifactError)."""

from __future__ import annotations

from restv2_edge.errors import ArtifactError


class MILError(ArtifactError):
    """A Core ML package or ML program the interpreter cannot read or execute."""


class UnsupportedOpError(MILError):
    """An op (or op variant) the interpreter does not implement: never skipped silently."""

    def __init__(self, op_type: str, op_name: str = "", detail: str = "") -> None:
        where = f" (op {op_name!r})" if op_name else ""
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"MIL op {op_type!r}{where} is not supported by the restv2-edge MIL interpreter{extra}"
        )
        self.op_type = op_type
        self.op_name = op_name
