"""Package attributes imported on first use, so ``import listcopy`` and ``listcopy --help`` stay
fast (no torch until a command needs it):

    __getattr__ = lazy_attributes(__name__, {"train": "training", "Ensemble": ("engine", "Ensemble")})

A table value is the submodule that holds the attribute of the same name, or (submodule, name).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, table: Mapping[str, str | tuple[str, str]]
                    ) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports from ``table`` on first use."""
    def __getattr__(name: str) -> Any:
        entry = table.get(name)
        if entry is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = (entry, name) if isinstance(entry, str) else entry
        return getattr(importlib.import_module(f".{module}", package), attr)

    return __getattr__
