"""Files the project writes: checked before any work (`check_output_path`) and written whole or
not at all (`write_atomically`: a temporary file next to the target, then a rename). The one writer
of checkpoints, exports, reports and subnet lists."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputPathError(RuntimeError):
    """An output path that cannot be written (a directory, under a file, read-only, ...)."""


def check_output_path(path: Path) -> None:
    """Refuse, before any work, a path the file cannot be written to; the message names it."""
    if path.is_dir():
        raise OutputPathError(f"output {path} is a directory; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"output {path}: {parent} is not a directory")
    try:  # a real probe: permissions, read-only mounts and pseudo file systems (/proc) all show here
        handle, probe = tempfile.mkstemp(dir=parent, prefix=".subnetsearch-probe.")
    except OSError as error:
        raise OutputPathError(f"output {path}: cannot write in {parent}: {error.strerror or error}") from None
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
