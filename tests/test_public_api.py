"""The public API: each method package exports its verbs, configs and results in ``__all__`` (loaded on first use),
and the notebooks import only from public modules."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("reasonlens.patching", "reasonlens.attribution", "reasonlens.importance")
# The packages above, and the modules the README's module table lists.
PUBLIC = {"reasonlens", "reasonlens.ontology", *PACKAGES, "reasonlens.tokenizer", "reasonlens.spans",
          "reasonlens.model", "reasonlens.runtime", "reasonlens.generation", "reasonlens.train", "reasonlens.zoo_build",
          "reasonlens.evaluate", "reasonlens.plot", "reasonlens.reports", "reasonlens.results", "reasonlens.tour"}
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_resolves_to_a_public_object_of_its_module(package):
    module = importlib.import_module(package)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert not name.startswith("_")
        value = getattr(module, name)
        assert value.__module__.startswith(package + "."), f"{name} comes from {value.__module__}"
        assert name in dir(module)
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(module.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_importing_a_package_loads_none_of_its_modules():
    code = ("import sys, reasonlens.patching, reasonlens.attribution, reasonlens.importance; "
            "print(sorted(m for m in sys.modules if m.count('.') == 2 and m.split('.')[1] in "
            "('patching', 'attribution', 'importance')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _notebook_imports(path: Path) -> list[tuple[str, list[str]]]:
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reasonlens":
                found.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "reasonlens"]
    return found


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_only_public_imports(notebook):
    private = []
    for module, names in _notebook_imports(notebook):
        if module not in PUBLIC:
            private.append(f"{module} (not a public module)")
            continue
        exported = getattr(importlib.import_module(module), "__all__", None)
        private += [f"{module}.{n}" for n in names
                    if n.startswith("_") or (exported is not None and n not in exported
                                             and f"{module}.{n}" not in PUBLIC)]
    assert not private, f"{notebook.name} imports " + ", ".join(private)
