"""The root of every error subnetsearch raises on purpose.

Catch `SubnetsearchError` to handle anything the library refuses or cannot do (a bad argument, a
damaged checkpoint, an unreachable store or cluster) apart from bugs. Each class also keeps the
standard base its callers may rely on: an argument or file the caller can fix is a `ValueError`
(`InputError`, `ArchError`, `CheckpointError`, ...), a failure of something outside the caller's
input (a store, a cluster, a runtime) a `RuntimeError` (`StorageError`, `ClusterError`, ...)."""

from __future__ import annotations


class SubnetsearchError(Exception):
    """Anything subnetsearch refuses or cannot do; its message names the problem and, where there is
    one, the fix. The command line prints it as one line and exits with status 1."""


class InputError(SubnetsearchError, ValueError):
    """A bad argument, option or setting (a value out of range, an unknown name, a combination that
    cannot work), refused before any work is done."""


class ExportError(SubnetsearchError, RuntimeError):
    """A mode cannot be exported or lowered to a runtime's format (checkpoint moved or changed, mode
    invalid, bad format, an operator the exporter or the runtime's lowering does not take)."""


__all__ = ["ExportError", "InputError", "SubnetsearchError"]
