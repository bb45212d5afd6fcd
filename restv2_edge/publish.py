"""Publishing outputs: build beside the output, then one no-replace rename into place.

Every command that writes (export, golden, calibrate, train, the apps' copy script, reports)
goes through here, so they share one rule: an existing output is replaced only with
``force``, and that is checked again at the moment of publishing, so that of two concurrent
writers one wins and the other fails cleanly instead of silently replacing the first.
A published output has the permissions the user's umask gives a new file or folder.

Work folders are named ``.NAME.partial-PID-RANDOM``; a later publish to the same output
removes those whose process is gone (an export killed by a signal leaves one behind).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from restv2_edge.errors import OutputError

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
PARTIAL = ".partial-"


def umask_mode(directory: bool) -> int:
    """The mode the umask gives a new folder (0o777 & ~umask) or file (0o666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def check_output(path: str | os.PathLike[str], force: bool, flag: str = "--force") -> Path:
    """Refuse an existing output without ``force`` and an output whose folder is unwritable.

    Called before any long work, so a bad output path fails in the first second, not after
    an hour of training.
    """
    path = Path(path)
    if (path.is_symlink() or path.exists()) and not force:
        raise OutputError(f"{path} exists; pass {flag} to replace it")
    check_writable_folder(path.parent)
    return path


def check_writable_folder(folder: Path) -> None:
    """The nearest existing ancestor of ``folder`` must be a folder we can create files in.

    Probed with an unnamed temporary file (nothing appears in the folder): permission bits
    say little for root or for special file systems such as /proc.
    """
    probe = folder if str(folder) else Path(".")
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot write to {folder}: {probe} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def check_report_path(path: str | os.PathLike[str]) -> Path:
    """A report file (``--json``, ``--markdown``): not a folder, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write to {path}: permission denied")
    check_writable_folder(path.parent)
    return path


def optional_report_arg(value: str) -> Path | None:
    """An argparse type for a script's report option: a checked report path, or ``none``."""
    import argparse

    from restv2_edge.errors import RestV2EdgeError

    if value.lower() == "none":
        return None
    try:
        return check_report_path(value)
    except RestV2EdgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def write_report(path: str | os.PathLike[str], text: str) -> Path:
    """Write a report file atomically (temp file, then rename); reports are always replaced."""
    path = check_report_path(path)
    with staged_file(path, force=True) as tmp:
        tmp.write_text(text)
    return path


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove ``.NAME.partial-PID-*`` folders beside ``output`` whose process has ended."""
    removed = []
    prefix = f".{output.name}{PARTIAL}"
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        return removed
    for candidate in parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _work_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def staged_dir(output: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield an empty work folder beside ``output``; publish it there if the block succeeds.

    On any exception (Ctrl-C included) the work folder is removed and ``output`` is untouched.
    """
    output = check_output(output, force)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(output)
        work = _work_path(output)
        work.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write to {output.parent}: {exc.strerror or exc}") from None
    try:
        yield work
        publish(work, output, force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(output: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temp file path beside ``output``; publish it there if the block succeeds."""
    output = check_output(output, force)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(output)
        work = _work_path(output)
    except OSError as exc:
        raise OutputError(f"cannot write to {output.parent}: {exc.strerror or exc}") from None
    try:
        yield work
        publish(work, output, force)
    except BaseException:
        if work.is_dir():
            shutil.rmtree(work, ignore_errors=True)
        else:
            work.unlink(missing_ok=True)
        raise


def publish(work: Path, output: Path, force: bool) -> None:
    """Give ``work`` the umask's permissions, sync it, and rename it to ``output``.

    Without ``force`` the rename never replaces: an output that appeared meanwhile (another
    writer) is an error. With ``force`` the old output is moved aside first and removed after.
    """
    _set_modes(work)
    _fsync_tree(work)
    old = None
    if force and (output.is_symlink() or output.exists()):
        old = output.with_name(f".{output.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(output, old)
    try:
        rename_no_replace(work, output)
    except FileExistsError:
        if old is not None:
            rename_no_replace(old, output)
        raise OutputError(
            f"{output} was created by another writer meanwhile; nothing replaced "
            "(pass --force to replace it)"
        ) from None
    _fsync_dir(output.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def rename_no_replace(source: Path, dest: Path) -> None:
    """Atomic rename that fails with FileExistsError when ``dest`` exists (Linux renameat2)."""
    libc = _libc()
    if libc is not None:
        result = libc.renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(dest), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", str(dest))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(dest))
    _rename_with_link(source, dest)


def _rename_with_link(source: Path, dest: Path) -> None:
    """Fallback where renameat2 is missing: a hard link for files, mkdir as a lock for dirs."""
    if source.is_dir():
        dest.mkdir()
        os.rename(source, dest)  # replaces the empty folder just made
        return
    os.link(source, dest)
    source.unlink()


_LIBC: ctypes.CDLL | bool | None = False


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is False:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.renameat2.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
            _LIBC = libc
        except (OSError, AttributeError):
            _LIBC = None
    return _LIBC  # type: ignore[return-value]


def _set_modes(work: Path) -> None:
    dir_mode, file_mode = umask_mode(True), umask_mode(False)
    if work.is_dir():
        for root, dirs, files in os.walk(work):
            os.chmod(root, dir_mode)
            for name in files:
                os.chmod(os.path.join(root, name), file_mode)
            for name in dirs:
                os.chmod(os.path.join(root, name), dir_mode)
    else:
        os.chmod(work, file_mode)


def _fsync_tree(work: Path) -> None:
    paths = [work] if work.is_file() else [p for p in work.rglob("*") if p.is_file()]
    for path in paths:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if work.is_dir():
        _fsync_dir(work)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
