"""Load models as TransformerLens 4 ``TransformerBridge``: shipped reference models, local folders, hub names.

Shipped models live in ``reasonlens/zoo/<name>/``: an ordinary Hugging Face folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) plus ``reasonlens.json`` with at least
``{"role": "main" | "second-seed" | "headroom", "description": str, "train_question_seeds": [lo, hi]}``.

:func:`load_model` works around three TransformerLens 4.3 rough edges: the tokenizer
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
# Weight files transformers loads from a folder (one of them must be there).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_PROBE_SECONDS = 3.0  # how long a hub look-up waits for a connection before failing
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
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8 or not JSON
        raise ReasonlensError(f"{meta_file} is not readable JSON ({type(e).__name__}: {e}); rewrite it or reinstall "
                              "the model") from e
    if not isinstance(meta, dict):
        raise ReasonlensError(f"{meta_file} holds a {type(meta).__name__}, not a JSON object; rewrite it as "
                              f"{{{', '.join(repr(k) + ': ...' for k in _REQUIRED_METADATA)}}}")
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ReasonlensError(f"{meta_file} lacks {missing}; add them (required keys: {list(_REQUIRED_METADATA)})")
    if meta["role"] not in ROLES:
        raise ReasonlensError(f"{meta_file} has role {meta['role']!r}; use one of {ROLES}")
    seeds = meta["train_question_seeds"]
    if not (isinstance(seeds, list) and len(seeds) == 2 and all(type(s) is int for s in seeds)
            and seeds[0] <= seeds[1]):
        raise ReasonlensError(f"{meta_file} has train_question_seeds {seeds!r}; it must be [lo, hi], two integers "
                              "with lo <= hi (the half-open range of generator seeds of the training questions)")
    if not isinstance(meta["description"], str):
        raise ReasonlensError(f"{meta_file} has description {meta['description']!r}; it must be a string")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return ModelInfo(name=folder.name, role=meta["role"], path=folder, size_bytes=size,
                     description=meta["description"], train_question_seeds=(seeds[0], seeds[1]), metadata=meta)


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
    try:
        if (folder / "tokenizer.json").is_file():
            # Straight from tokenizer.json: AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer, which ignores it.
            from transformers import PreTrainedTokenizerFast

            return _from_pretrained(PreTrainedTokenizerFast, str(folder))
        if any((folder / f).is_file() for f in _TOKENIZER_FILES):
            from transformers import AutoTokenizer

            return _from_pretrained(AutoTokenizer, str(folder))
    except Exception as e:  # the tokenizers library raises plain Exception for a broken tokenizer.json
        raise ReasonlensError(
            f"the tokenizer files of {folder} do not load ({_reason(e)}); save the tokenizer again with "
            "tokenizer.save_pretrained(folder), or delete its files to load the model without one") from e
    return None


def _reason(e: BaseException) -> str:
    """An exception's type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check_folder(folder: Path) -> None:
    """A :class:`ReasonlensError` naming what a model folder lacks: a readable ``config.json`` (a JSON object with a
    ``model_type``) and weights (:data:`WEIGHT_FILES`)."""
    config = folder / "config.json"
    if not config.is_file():
        raise ReasonlensError(f"{folder} is not a Hugging Face model folder (no config.json); save the model "
                              "there with model.save_pretrained(folder)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8 or not JSON
        raise ReasonlensError(f"{config} is not valid JSON ({_reason(e)}); save the model again with "
                              "model.save_pretrained(folder), or copy its config.json again") from e
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        got = f"a {type(data).__name__}" if not isinstance(data, dict) else "an object without 'model_type'"
        raise ReasonlensError(f"{config} holds {got}, not a Hugging Face model configuration; save the model again "
                              "with model.save_pretrained(folder)")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ReasonlensError(f"{folder} has no weights (none of {', '.join(WEIGHT_FILES)}); save the model there with "
                              "model.save_pretrained(folder), or finish copying or downloading it")


def _load_folder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    _check_folder(folder)
    tokenizer = _folder_tokenizer(folder)
    try:
        if tokenizer is not None:
            return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype, tokenizer=tokenizer)
        # boot_transformers insists on a tokenizer, so wrap the loaded model directly.
        from transformer_lens.model_bridge.sources import build_bridge_from_module
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="eager").to(device)
        return build_bridge_from_module(hf, hf.config.architectures[0], hf_config=hf.config, model_name=str(folder),
                                        device=device)
    except ReasonlensError:
        raise
    except Exception as e:  # a broken or truncated weight file, weights of other shapes, an unknown architecture
        raise ReasonlensError(
            f"cannot load the model in {folder} ({_reason(e)}); its files may be incomplete or from another "
            "model: save it again with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)") from e


def hub_problem(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached now (offline mode, or no connection to its host, or to the
    proxy, within ``timeout`` seconds), or ``None`` when it can; a look-up of a name that is not on this machine
    waits on the network only after this says yes."""
    import threading
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    found: list[str | None] = []

    def connect() -> None:  # in a thread: a name look-up is not bounded by the socket timeout
        import socket

        try:
            socket.create_connection((host, port), timeout=timeout).close()
            found.append(None)
        except OSError as e:
            found.append(f"no connection to {host}:{port}: {e}")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return found[0] if found else f"no connection to {host}:{port} within {timeout:g} s"


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a name the cache cannot hold
        return False


def _load_hub(name: str, device: str | torch.device, dtype: torch.dtype) -> TransformerBridge:
    from huggingface_hub import constants
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    unreachable = hub_problem()
    if unreachable and not _in_hub_cache(name):
        raise ReasonlensError(
            f"cannot load model {name!r}: it is not a shipped model (shipped: {_shipped_names()}), not a local "
            f"folder, not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the hub is unreachable "
            f"({unreachable}); check the name, pass the path of a folder written by save_pretrained, or connect to "
            "the network")
    offline = constants.HF_HUB_OFFLINE
    try:
        if unreachable:
            constants.HF_HUB_OFFLINE = True  # load from the cache without waiting on the network
        tokenizer = _from_pretrained(AutoTokenizer, name)
        return TransformerBridge.boot_transformers(name, device=device, dtype=dtype, tokenizer=tokenizer)
    except (OSError, ValueError) as e:
        raise ReasonlensError(
            f"cannot load model {name!r}: it is not a shipped model (shipped: {_shipped_names()}), not a local "
            f"folder, and not reachable on the Hugging Face hub ({_reason(e)}); check the name, or pass the path of a "
            "folder written by save_pretrained") from e
    finally:
        constants.HF_HUB_OFFLINE = offline


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


def model_fingerprint(model: Any) -> str:
    """A digest of a model's Hugging Face config, weights (float64 sum and absolute sum of every tensor) and
    compatibility mode: two loads of one checkpoint match, two seeds of one architecture or a trained copy do not
    (the folder name takes no part). Works on a ``TransformerBridge`` or any ``torch.nn.Module``.

    >>> model_fingerprint(load_model("reasonlens-main")) == model_fingerprint(load_model("reasonlens-seed1"))
    False
    """
    import hashlib

    hf_model = getattr(model, "original_model", model)
    config = hf_model.config.to_dict() if hasattr(hf_model, "config") and hasattr(hf_model.config, "to_dict") else {}
    config.pop("_name_or_path", None)
    with torch.no_grad():
        weights = [(name, list(p.shape), repr(float(p.sum(dtype=torch.float64))),
                    repr(float(p.abs().sum(dtype=torch.float64)))) for name, p in model.named_parameters()]
    data = {"config": config, "weights": weights,
            "compatibility_mode": bool(getattr(model, "compatibility_mode", False))}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
