"""stowage: save tensors, tables, classes and plain data through the same
serializer plugins, config and store as the ``stowage`` command —
in-process, zero-copy.

>>> import stowage
>>> h = stowage.Host()                 # same discovery as the CLI
>>> record = h.save("weights", array)  # -> dict, as ``stowage inspect --json``
>>> h.load("weights")                  # verified
>>> h.load("weights", mapped=True)     # O(1), zero-copy, unverified

Errors are :class:`Error` subclasses; a plugin that failed while another
took the value emits a :class:`PluginWarning`. No pickle anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._convert import RawTensor, TensorMap
from ._stowage import (
    ConfigError,
    Error,
    Host,
    IntegrityError,
    NoSerializer,
    NotFound,
    PluginError,
    PluginWarning,
    __version__,
)

# Named as the package exports them (records' caller_type, reprs).
RawTensor.__module__ = TensorMap.__module__ = "stowage"

__all__ = [
    "ClassSource",
    "ConfigError",
    "Error",
    "Host",
    "IntegrityError",
    "NoSerializer",
    "NotFound",
    "PluginError",
    "PluginWarning",
    "RawTensor",
    "TensorMap",
    "__version__",
]


@dataclass(frozen=True)
class ClassSource:
    """A stored class, as source. Loading never runs it; :meth:`build` does."""

    source: str
    qualname: str
    module: str | None = None

    def build(self, namespace: dict[str, Any] | None = None) -> type:
        """Executes the source in ``namespace`` (a fresh dict by default) and
        returns the class named by ``qualname``."""
        scope: dict[str, Any] = {} if namespace is None else namespace
        scope.setdefault("__name__", self.module or "__stowage__")
        exec(compile(self.source, f"<stowage class {self.qualname}>", "exec"), scope)
        obj: Any = scope
        for part in self.qualname.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        return obj
