"""Lazy public exports: a package names its verbs, configs and results in ``__all__`` and imports the module
that defines one only when it is first used (so ``import reasonlens.patching`` loads no model code).

>>> exports = lazy_exports("reasonlens.ontology", {"generator": ("generate",)})
>>> exports.all
['generate']
>>> exports.get("generate").__name__
'generate'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any


class lazy_exports:  # noqa: N801 - used like a function in each package's __init__
    """The names of ``package``'s ``modules`` (submodule -> exported names), resolved on first use."""

    def __init__(self, package: str, modules: Mapping[str, Sequence[str]]):
        self.package = package
        self.where = {name: f"{package}.{module}" for module, names in modules.items() for name in names}
        clash = sorted(set(self.where) & set(modules))
        if clash:
            raise ValueError(f"{package} exports {clash}, which are also its submodules' names")
        self.all = list(self.where)

    def get(self, name: str) -> Any:
        if name not in self.where:
            raise AttributeError(f"module {self.package!r} has no attribute {name!r}")
        return getattr(import_module(self.where[name]), name)
