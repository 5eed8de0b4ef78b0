"""subnetsearch: AutoML search over dynamic subnets.

The subpackages hold the library (`supernets`, `trainers`, `search`, `devices`, `storage`, ...);
this top level holds only the error root, importable without torch."""

from subnetsearch.errors import ExportError, InputError, SubnetsearchError

__all__ = ["ExportError", "InputError", "SubnetsearchError"]
