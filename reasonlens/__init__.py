"""reasonlens: mechanistic interpretability of chain-of-thought reasoning, on TransformerLens.

>>> import reasonlens
>>> examples = reasonlens.ontology.generate(3, kind="false", hops=2, seed=0)
>>> len(examples)
3

The heavy entry points (``load_model``, ``list_models``, ``main_model_name``, ``generate``, ``GenerationConfig``)
are imported lazily on first use; the methods live in ``reasonlens.patching``, ``reasonlens.attribution`` and
``reasonlens.importance``, evaluation in ``reasonlens.evaluate``.
"""

from typing import Any

from reasonlens import ontology
from reasonlens.errors import ReasonlensError
from reasonlens.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = lazy_exports(__name__, {
    "model": ("load_model", "list_models", "main_model_name"),
    "generation": ("generate", "GenerationConfig", "Generation", "PromptPrefill"),
})
__all__ = ["ReasonlensError", "ontology", *_EXPORTS.all]


def __getattr__(name: str) -> Any:
    return _EXPORTS.get(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
