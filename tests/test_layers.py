"""The package's layering: imports (at module level and inside functions) run one way, and no module imports
itself back through others."""

import ast
from pathlib import Path

import reasonlens

ROOT = Path(reasonlens.__file__).parent

# Lowest first; a module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("reasonlens.errors", "reasonlens.lazy", "reasonlens.ontology", "reasonlens.stats", "reasonlens.tokenizer")),
    ("runtime", ("reasonlens.model", "reasonlens.validation", "reasonlens.runtime", "reasonlens.generation", "reasonlens.spans",
                 "reasonlens.results", "reasonlens.resume", "reasonlens.output")),
    ("methods", ("reasonlens.evaluate", "reasonlens.patching", "reasonlens.attribution", "reasonlens.importance",
                 "reasonlens.train", "reasonlens.zoo_build")),
    ("reports", ("reasonlens.plot", "reasonlens.reports")),
    ("interface", ("reasonlens.cli", "reasonlens.tour", "reasonlens")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's reasonlens imports, resolved to modules (``from reasonlens.x import y``: ``reasonlens.x.y``
    when that is a module, else ``reasonlens.x``); imports under ``TYPE_CHECKING`` count too."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reasonlens":
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "reasonlens"}
        graph[name] = targets - {name}
    return graph


def _layer(module: str) -> int:
    best = max(((len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is in no layer of tests/test_layers.py"
    return best[1]


def test_imports_never_go_up_a_layer():
    upward = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
              for a, targets in _imports().items() for b in sorted(targets) if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state and module != "reasonlens":  # the package's own __init__ re-exports its parts
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    crossing = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reasonlens"):
                crossing += [f"{name} imports {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and node.module != name]
    assert not crossing, "\n".join(crossing)


def test_every_model_parameter_is_annotated():
    """A parameter named ``model`` says what it takes (``TransformerBridge``; the Hugging Face model in training)."""
    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                bare += [f"{_module_name(path)}:{node.lineno} {node.name}" for p in params
                         if p.arg == "model" and p.annotation is None]
    assert not bare, "parameters named model without an annotation:\n" + "\n".join(bare)
