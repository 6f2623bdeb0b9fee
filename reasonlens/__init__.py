"""reasonlens: mechanistic interpretability of chain-of-thought reasoning, on TransformerLens.

>>> import reasonlens
>>> examples = reasonlens.ontology.generate(3, kind="false", hops=2, seed=0)
>>> len(examples)
3

The heavy entry points (``load_model``, ``list_models``, ``generate``, ``GenerationConfig``) are imported
lazily on first use; evaluation lives in ``reasonlens.evaluate``.
"""

from importlib import import_module
from typing import Any

from reasonlens import ontology
from reasonlens.errors import ReasonlensError

__version__ = "0.1.0"

_LAZY = {
    "load_model": "reasonlens.model",
    "list_models": "reasonlens.model",
    "generate": "reasonlens.generation",
    "GenerationConfig": "reasonlens.generation",
    "Generation": "reasonlens.generation",
}
__all__ = ["ReasonlensError", "ontology", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reasonlens' has no attribute {name!r}")
