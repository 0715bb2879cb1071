"""Public names of a package imported from their submodule on first use.

``import tunekit.schedulers`` for ASHA should not import torch, gpytorch and nevergrad because DyHPO and the
nevergrad bridge live beside it: each name's submodule is imported only when the name is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``name`` from ``package.modules[name]``."""

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{modules[name]}"), name)

    return __getattr__
