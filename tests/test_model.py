"""Loading models as TransformerBridge: HF parity, legacy hook names on Llama / Qwen2 (GQA) / GPT-2, the zoo,
and the errors for unknown names, missing tokenizers and unknown hook names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_util import ARCHS, D_MLP, D_MODEL, N_HEADS, N_KV_HEADS, N_LAYERS, PROMPT, write_checkpoint

import reasonlens.model as rl_model
from reasonlens.errors import ReasonlensError
from reasonlens.model import (
    check_hook_name,
    hook_names,
    list_models,
    load_model,
    main_model_name,
    model_info,
    require_tokenizer,
)
from reasonlens.tokenizer import build_reference_tokenizer


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: write_checkpoint(root / arch, arch) for arch in ARCHS}


@pytest.fixture
def zoo(tmp_path, monkeypatch, folders) -> Path:
    """A zoo with one shipped model, ``tiny-main``."""
    dest = tmp_path / "zoo" / "tiny-main"
    shutil.copytree(folders["llama"], dest)
    (dest / "reasonlens.json").write_text(json.dumps(
        {"role": "main", "description": "tiny test model", "train_question_seeds": [1_000_000, 1_000_100], "steps": 3}))
    monkeypatch.setattr(rl_model, "ZOO_DIR", tmp_path / "zoo")
    return tmp_path / "zoo"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("compat", [False, True])
def test_logits_match_hf(folders, arch, compat):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folders[arch], attn_implementation="eager").eval()
    model = load_model(folders[arch], compatibility_mode=compat)
    assert not model.training
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        ours, ref = model(tokens), hf(tokens).logits
    if compat:
        assert (ours.log_softmax(-1) - ref.log_softmax(-1)).abs().max() <= 1e-5
    else:
        assert (ours - ref).abs().max() <= 1e-5


LEGACY = {  # hook kind -> shape after [batch, pos]
    "hook_embed": (D_MODEL,),
    "blocks.{l}.hook_resid_pre": (D_MODEL,),
    "blocks.{l}.hook_resid_mid": (D_MODEL,),
    "blocks.{l}.hook_resid_post": (D_MODEL,),
    "blocks.{l}.attn.hook_q": (N_HEADS, D_MODEL // N_HEADS),
    "blocks.{l}.attn.hook_k": ("kv", D_MODEL // N_HEADS),
    "blocks.{l}.attn.hook_v": ("kv", D_MODEL // N_HEADS),
    "blocks.{l}.attn.hook_z": (N_HEADS, D_MODEL // N_HEADS),
    "blocks.{l}.attn.hook_pattern": None,  # [batch, head, query, key]
    "blocks.{l}.hook_attn_out": (D_MODEL,),
    "blocks.{l}.hook_mlp_out": (D_MODEL,),
    "blocks.{l}.mlp.hook_post": (D_MLP,),
    "ln_final.hook_normalized": (D_MODEL,),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_legacy_hook_names_and_shapes(folders, arch):
    model = load_model(folders[arch])
    tokens = model.to_tokens(PROMPT)
    pos = tokens.shape[1]
    names = sorted({k.format(l=l) for k in LEGACY for l in range(N_LAYERS)})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    kv = N_KV_HEADS if arch == "qwen2" else N_HEADS
    for kind, tail in LEGACY.items():
        for layer in range(N_LAYERS):
            name = kind.format(l=layer)
            expected = (1, N_HEADS, pos, pos) if tail is None else (1, pos, *(kv if d == "kv" else d for d in tail))
            assert tuple(cache[name].shape) == expected, name
    assert hook_names(model, "attn.hook_z") == [f"blocks.{l}.attn.hook_z" for l in range(N_LAYERS)]
    assert "hook_embed" in hook_names(model)


def test_reference_tokenizer_survives_every_arch(folders):
    """TL bug 1 (Qwen2 folder -> Qwen2Tokenizer) and bug 9 (Qwen adapter drops BOS) are worked around."""
    expected = build_reference_tokenizer()(PROMPT)["input_ids"]
    for arch in ARCHS:
        model = load_model(folders[arch], compatibility_mode=False)
        assert model.to_tokens(PROMPT)[0].tolist() == expected, arch


def test_zoo_listing_and_loading_by_name(zoo):
    [info] = list_models()
    assert (info.name, info.role, info.train_question_seeds, info.path) == ("tiny-main", "main", (1_000_000, 1_000_100),
                                                                         zoo / "tiny-main")
    assert info.size_bytes > 0 and info.metadata["steps"] == 3
    assert main_model_name() == "tiny-main"
    assert model_info("tiny-main") == info and model_info(zoo / "tiny-main") == info and model_info("gpt2") is None
    assert load_model("tiny-main").cfg.n_layers == N_LAYERS


def test_empty_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_model, "ZOO_DIR", tmp_path / "missing")
    assert list_models() == []
    with pytest.raises(ReasonlensError, match="no main model is shipped"):
        main_model_name()


def test_bad_zoo_metadata(zoo):
    (zoo / "tiny-main" / "reasonlens.json").write_text(json.dumps({"role": "best", "description": "",
                                                                    "train_question_seeds": [0, 1]}))
    with pytest.raises(ReasonlensError, match="role 'best'"):
        list_models()


def test_unknown_name_lists_shipped_models(zoo, offline):
    with pytest.raises(ReasonlensError, match=r"not a shipped model \(shipped: tiny-main\).*hub"):
        load_model("no-such-model-xyz")
    with pytest.raises(ReasonlensError, match="tiny-main.*not a model folder"):
        load_model("./no/such/folder")


def test_folder_without_config(tmp_path):
    with pytest.raises(ReasonlensError, match="no config.json"):
        load_model(tmp_path)


def test_missing_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = write_checkpoint(tmp_path / "bare", tokenizer=False)
    model = load_model(folder, compatibility_mode=False)
    assert model.tokenizer is None
    tokens = torch.tensor([build_reference_tokenizer()(PROMPT)["input_ids"]])
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() <= 1e-5
    with pytest.raises(ReasonlensError, match="has no tokenizer.*save_pretrained"):
        require_tokenizer(model)


def test_check_hook_name(folders):
    model = load_model(folders["llama"])
    assert check_hook_name(model, "blocks.1.attn.hook_z") == "blocks.1.attn.hook_z"
    with pytest.raises(ReasonlensError, match=r"did you mean \['blocks.1.attn.hook_z'.*blocks.\{l\}.mlp.hook_post"):
        check_hook_name(model, "blocks.1.attn.hook_zz")
    with pytest.raises(ReasonlensError, match="valid kinds"):
        hook_names(model, "attn.hook_zz")
