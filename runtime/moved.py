"""Names that moved to another module stay importable from their old one for one version.

A module lists what moved and sets ``__getattr__ = moved_names(__name__, {...})`` (PEP 562): the
old import then warns with a ``DeprecationWarning`` naming the new home and returns the object.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType


def moved_names(module: str, moved: dict[str, ModuleType]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``module`` whose names in ``moved`` now live in the module
    each maps to."""

    def __getattr__(name: str) -> object:
        if name in moved:
            home = moved[name].__name__
            warnings.warn(
                f"{module}.{name} moved to {home}.{name}; import it from there",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(moved[name], name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
