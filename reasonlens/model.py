"""Load models as TransformerLens 4 ``TransformerBridge``: shipped reference models, local folders, hub names.

Shipped models live in ``reasonlens/zoo/<name>/``: an ordinary Hugging Face folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) plus ``reasonlens.json`` with at least
``{"role": "main" | "second-seed" | "headroom", "description": str, "train_question_seeds": [lo, hi]}``.

:func:`load_model` works around the TransformerLens 4.3 rough edges measured in the field guide: the tokenizer
is always loaded here and passed in (with ``add_bos_token=True`` so TransformerLens does not reload it from the
hub, and from ``tokenizer.json`` so a Qwen2 folder does not get ``Qwen2Tokenizer``), BOS is kept when the
tokenizer itself prepends one, and the bridge is left in eval mode.

>>> import tempfile
>>> from reasonlens.tokenizer import build_reference_tokenizer
>>> from reasonlens.train import ArchitectureConfig, build_model
>>> tok = build_reference_tokenizer()
>>> tmp = tempfile.TemporaryDirectory()
>>> folder = tmp.name
>>> build_model(ArchitectureConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64), tok, seed=0).save_pretrained(folder)
>>> _ = tok.save_pretrained(folder)
>>> model = load_model(folder)
>>> hook_names(model, "attn.hook_z")
['blocks.0.attn.hook_z', 'blocks.1.attn.hook_z']
>>> model.to_tokens("Every wumpus is wooden.").tolist()
[[1, 4, 27, 6, 66, 22]]
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reasonlens.errors import ReasonlensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

ZOO_DIR: Path = Path(__file__).parent / "zoo"
ROLES: tuple[str, ...] = ("main", "second-seed", "headroom")
METADATA_FILE = "reasonlens.json"
_REQUIRED_METADATA = ("role", "description", "train_question_seeds")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# A hub repository id: "name" or "owner/name" (anything else can only be a local path).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class ModelInfo:
    """A shipped model: its zoo folder and the metadata in its ``reasonlens.json`` (all of it in ``metadata``)."""

    name: str
    role: str
    path: Path
    size_bytes: int
    description: str
    train_question_seeds: tuple[int, int]  # half-open range of generator seeds of its training questions
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _read_info(folder: Path) -> ModelInfo:
    meta_file = folder / METADATA_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ReasonlensError(f"{meta_file} is not valid JSON ({e}); rewrite it or reinstall the model") from e
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ReasonlensError(f"{meta_file} lacks {missing}; add them (required keys: {list(_REQUIRED_METADATA)})")
    if meta["role"] not in ROLES:
        raise ReasonlensError(f"{meta_file} has role {meta['role']!r}; use one of {ROLES}")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return ModelInfo(name=folder.name, role=meta["role"], path=folder, size_bytes=size,
                     description=meta["description"], train_question_seeds=tuple(int(s) for s in meta["train_question_seeds"]), metadata=meta)


def list_models() -> list[ModelInfo]:
    """The shipped models in :data:`ZOO_DIR`, main model first, then by role and name (empty while none are
    installed).

    >>> all(m.role in ROLES for m in list_models())
    True
    """
    if not ZOO_DIR.is_dir():
        return []
    infos = [_read_info(d) for d in ZOO_DIR.iterdir() if (d / METADATA_FILE).is_file()]
    return sorted(infos, key=lambda m: (ROLES.index(m.role), m.name))


def model_info(name_or_path: str | Path) -> ModelInfo | None:
    """The :class:`ModelInfo` of a shipped model name, or of a folder holding a ``reasonlens.json``; ``None``
    for anything else (a plain folder or a hub name)."""
    for info in list_models():
        if str(name_or_path) == info.name:
            return info
    folder = Path(name_or_path).expanduser()
    if (folder / METADATA_FILE).is_file():
        return _read_info(folder)
    return None


def main_model_name() -> str:
    """The name of the shipped model whose role is ``main``."""
    for info in list_models():
        if info.role == "main":
            return info.name
    raise ReasonlensError(
        f"no main model is shipped in {ZOO_DIR}; build the zoo with `reasonlens train --zoo --install`, or "
        "pass a model folder or hub name instead")


def _shipped_names() -> str:
    names = [m.name for m in list_models()]
    return ", ".join(names) if names else f"none installed yet in {ZOO_DIR}"


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> PreTrainedTokenizerBase:
    """``cls.from_pretrained`` with ``add_bos_token=True`` (TL bug 1); tokenizers without a BOS token refuse it."""
    try:
        return cls.from_pretrained(source, add_bos_token=True, **kwargs)
    except ValueError:
        return cls.from_pretrained(source, **kwargs)


def _folder_tokenizer(folder: Path) -> PreTrainedTokenizerBase | None:
    if (folder / "tokenizer.json").is_file():
        # Straight from tokenizer.json: AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer, which ignores it.
        from transformers import PreTrainedTokenizerFast

        return _from_pretrained(PreTrainedTokenizerFast, str(folder))
    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        return _from_pretrained(AutoTokenizer, str(folder))
    return None


def _load_folder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    if not (folder / "config.json").is_file():
        raise ReasonlensError(f"{folder} is not a Hugging Face model folder (no config.json); save the model "
                              "there with model.save_pretrained(folder)")
    tokenizer = _folder_tokenizer(folder)
    if tokenizer is not None:
        return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype, tokenizer=tokenizer)
    # boot_transformers insists on a tokenizer, so wrap the loaded model directly.
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="eager").to(device)
    return build_bridge_from_module(hf, hf.config.architectures[0], hf_config=hf.config, model_name=str(folder),
                                    device=device)


def _load_hub(name: str, device: str | torch.device, dtype: torch.dtype) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    try:
        tokenizer = _from_pretrained(AutoTokenizer, name)
        return TransformerBridge.boot_transformers(name, device=device, dtype=dtype, tokenizer=tokenizer)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReasonlensError(
            f"cannot load model {name!r}: it is not a shipped model (shipped: {_shipped_names()}), not a local "
            f"folder, and not reachable on the Hugging Face hub ({reason}); check the name, or pass the path of a "
            "folder written by save_pretrained") from e


def load_model(name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               compatibility_mode: bool = True) -> TransformerBridge:
    """A ``TransformerBridge`` in eval mode for a shipped model name, a local model folder, or a hub name.

    ``compatibility_mode=True`` calls ``enable_compatibility_mode()``: HookedTransformer numerics (folded
    norms, centred weights), whose logits differ from the Hugging Face model's by a constant per position
    (log-probabilities are equal). ``False`` keeps the exact Hugging Face logits. Hook names are the legacy
    ones (``blocks.{l}.attn.hook_z``) either way. A folder without a tokenizer loads, and methods that need
    one raise through :func:`require_tokenizer`.
    """
    info = next((m for m in list_models() if m.name == str(name_or_path)), None)
    folder = info.path if info else Path(name_or_path).expanduser()
    if folder.is_dir():
        model = _load_folder(folder, device, dtype)
    elif isinstance(name_or_path, str) and _HUB_ID.fullmatch(name_or_path) and not folder.exists():
        model = _load_hub(name_or_path, device, dtype)
    else:
        raise ReasonlensError(
            f"cannot load model {str(name_or_path)!r}: it is not a shipped model (shipped: {_shipped_names()}) "
            "and not a model folder; pass a shipped name, the path of a folder written by save_pretrained, or a "
            "hub name like 'gpt2'")
    if model.tokenizer is not None and model.cfg.tokenizer_prepends_bos:
        model.cfg.default_prepend_bos = True  # TL bug 9: the Qwen adapter would strip the tokenizer's own BOS
    if compatibility_mode:
        model.enable_compatibility_mode(disable_warnings=True)
    model.eval()
    return model


def require_tokenizer(model: TransformerBridge) -> PreTrainedTokenizerBase:
    """``model.tokenizer``, or a :class:`ReasonlensError` saying how to give the model one."""
    if model.tokenizer is None:
        raise ReasonlensError(
            f"model {model.cfg.model_name!r} has no tokenizer (its folder has no tokenizer.json); save one into "
            "the folder with tokenizer.save_pretrained(folder) (reasonlens.tokenizer.save_reference_tokenizer "
            "for the reference vocabulary) and load the model again")
    return model.tokenizer


def context_length(model: TransformerBridge) -> int:
    """The most positions ``model`` can attend over (prompt plus generated tokens)."""
    return int(model.cfg.n_ctx)


def _layer_key(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]), ".".join(parts[2:])) if parts[0] == "blocks" and parts[1].isdigit() else (-1, name)


def _kind(name: str) -> str:
    return _layer_key(name)[1]


def hook_names(model: TransformerBridge, kind: str | None = None) -> list[str]:
    """Hook point names of ``model`` (legacy aliases included), in layer order; with ``kind`` (a name without its
    ``blocks.{l}.`` prefix, e.g. ``"attn.hook_z"`` or ``"hook_embed"``), only the names of that kind."""
    names = sorted(model.hook_dict, key=_layer_key)
    if kind is None:
        return names
    found = [n for n in names if _kind(n) == kind]
    if not found:
        kinds = sorted({_kind(n) for n in names})
        close = difflib.get_close_matches(kind, kinds, n=3)
        hint = f"did you mean {close}? " if close else ""
        raise ReasonlensError(f"no hook points of kind {kind!r} on this model; {hint}valid kinds: {kinds}")
    return found


def check_hook_name(model: TransformerBridge, name: str) -> str:
    """``name`` if ``model`` has that hook point, else a :class:`ReasonlensError` listing the valid names."""
    if name in model.hook_dict:
        return name
    names = hook_names(model)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {close}? " if close else ""
    kinds = sorted({n if _layer_key(n)[0] < 0 else "blocks.{l}." + _kind(n) for n in names})
    raise ReasonlensError(f"unknown hook name {name!r}; {hint}valid names (l = 0..{model.cfg.n_layers - 1}): {kinds}")
