"""Files the project writes: checked before any work (`check_output_path`) and written whole or
not at all (`write_atomically`: a temporary file next to the target, then a rename). The one writer
of checkpoints, exports, reports and subnet lists."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from subnetsearch.errors import SubnetsearchError


class OutputPathError(SubnetsearchError, RuntimeError):
    """An output path that cannot be written (a directory, under a file, read-only, ...)."""


def check_output_path(path: Path) -> None:
    """Refuse, before any work, a path the file cannot be written to; the message names it."""
    if path.is_dir():
        raise OutputPathError(f"output {path} is a directory; give a file name")
    _probe(path.parent, f"output {path}")


def check_output_folder(folder: Path) -> None:
    """Refuse, before any work, a folder files cannot be written in (a file, under a file,
    read-only); it need not exist yet."""
    _probe(folder, f"output folder {folder}")


def _probe(folder: Path, label: str) -> None:
    """The nearest existing folder at or above `folder` must be a folder one can create files in."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{label}: {folder} is not a directory")
    try:  # a real probe: permissions, read-only mounts and pseudo file systems (/proc) all show here
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".subnetsearch-probe.")
    except OSError as error:
        raise OutputPathError(f"{label}: cannot write in {folder}: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(probe)


def write_atomically(path: str | Path, payload: bytes) -> Path:
    """Write next to the target and rename, so a failure never leaves a half-written file. Errors
    of the file system are an OutputPathError naming the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise OutputPathError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(temporary, path)
        return path
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OutputPathError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
