"""reasonlens: mechanistic interpretability of chain-of-thought reasoning, on TransformerLens."""

__version__ = "0.1.0"
