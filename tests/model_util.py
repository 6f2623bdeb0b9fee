"""Tiny randomly initialised checkpoints for tests (Llama, Qwen2 with GQA, GPT-2; also Gemma, Gemma-2 with
GQA and GPT-NeoX with parallel attention and MLP), saved with the reference tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from reasonlens.tokenizer import build_reference_tokenizer

ARCHS = ("llama", "qwen2", "gpt2")
MORE_ARCHS = ("gemma", "gemma2", "neox")
N_LAYERS, D_MODEL, N_HEADS, N_KV_HEADS, D_MLP, N_CTX = 2, 64, 4, 2, 128, 64
PROMPT = "Q: Every wumpus is wooden. Rex is a wumpus. True or false: Rex is wooden.\nA:"


def write_checkpoint(folder: Path, arch: str = "llama", *, tokenizer: bool = True, scale: float = 1.0,
                     seed: int = 0, n_ctx: int = N_CTX, n_layers: int = N_LAYERS, vocabulary: int = 1) -> Path:
    """A randomly initialised tiny ``arch`` model (weights times ``scale``) saved with the reference tokenizer of
    version ``vocabulary``; ``arch`` is one of :data:`ARCHS` or :data:`MORE_ARCHS`."""
    import transformers as tf

    tok = build_reference_tokenizer(vocabulary)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_positions=n_ctx, n_embd=D_MODEL, n_layer=n_layers,
                                                 n_head=N_HEADS, n_inner=D_MLP, **ids))
    elif arch == "neox":
        model = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=n_layers, num_attention_heads=N_HEADS,
            max_position_embeddings=n_ctx, use_parallel_residual=True, tie_word_embeddings=False, **ids))
    else:
        sizes = dict(hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=n_layers,
                     num_attention_heads=N_HEADS, max_position_embeddings=n_ctx, tie_word_embeddings=False, **ids)
        if arch in ("llama", "gemma"):
            sizes["num_key_value_heads"] = N_HEADS
        elif arch in ("qwen2", "gemma2"):
            sizes["num_key_value_heads"] = N_KV_HEADS
        else:
            raise ValueError(f"unknown test architecture {arch!r}")
        if arch.startswith("gemma"):
            sizes["head_dim"] = D_MODEL // N_HEADS
        if arch == "gemma2":
            sizes["query_pre_attn_scalar"] = D_MODEL // N_HEADS
        config_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
                                 "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                                 "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM),
                                 "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM)}[arch]
        model = model_cls(config_cls(**sizes))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    model.save_pretrained(folder)
    if tokenizer:
        tok.save_pretrained(folder)
    return folder


def padded(model, prompts: list[str], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``prompts`` tokenized one by one (``rows``), then left-padded with token 0 to the longest row plus
    ``extra`` all-padding columns: ``(tokens, attention_mask, rows)``."""
    rows = [model.to_tokens(p)[0] for p in prompts]
    width = max(len(r) for r in rows) + extra
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return tokens, mask, rows


def write_subword_gpt2(folder: Path, tok, *, n_positions: int = 256, n_embd: int = 16, n_layer: int = 1) -> Path:
    """A randomly initialised tiny GPT-2 (seed 0) over the subword tokenizer ``tok``, saved with it in ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_subword_qwen2(folder: Path, tok, *, n_positions: int = 512, hidden: int = 32, n_layer: int = 2) -> Path:
    """A randomly initialised tiny Qwen2 with grouped-query attention (4 query heads, 2 key/value heads; seed 0) over
    the subword tokenizer ``tok``, saved with it in ``folder``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                 num_hidden_layers=n_layer, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=n_positions, tie_word_embeddings=False,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_pair(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clean token ids (5..149) and a corrupted copy differing at position 5, drawn from ``generator``."""
    clean = torch.randint(5, 150, (batch, length), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 5] = torch.randint(5, 150, (batch,), generator=generator)
    return clean, corrupted
