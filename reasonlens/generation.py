"""The one decoding loop of reasonlens: batched, KV-cached, hookable, seeded.

Evaluation decodes greedily with it; IPG samples trajectories with it while forward hooks scale components;
step-importance sampling draws continuations with it. Prompts are left-padded into batches with an attention
mask and per-row position ids, so a prompt decodes to the same tokens alone or in any batch. The KV cache is
the Hugging Face cache of the wrapped model, threaded through the bridge's own forward
(``return_type="logits_and_cache"``), so TransformerLens hook points fire on every decoding step: once on
the prompt pass with shape ``[batch, prompt, ...]`` (prompts left-padded to the batch's longest), then once
per new token with ``[batch, 1, ...]``. The batch keeps its rows until its last sequence stops.

>>> from reasonlens.model import load_model
>>> model = load_model("reasonlens-main")
>>> out = generate(model, ["Q: Wumpuses are wooden. Rex is a wumpus. True or false: Rex is wooden.\\nA:"])
>>> out.texts
['rex is a wumpus. wumpuses are wooden. rex is wooden. true']
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.model import check_hook_name, require_tokenizer
from reasonlens.results import ConfigDict
from reasonlens.runtime import (
    BlockEntry,
    FwdHook,
    can_enter_at_block,
    enter_at_block,
    left_pad,
    left_padded_positions,
    pad_token_id,
)
from reasonlens.validation import check_bool, check_context, check_float, check_int, check_token_lists

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

    from reasonlens.spans import TokenSpan

STOP_REASONS: tuple[str, ...] = ("eos", "answer", "blank_line", "length")
# The answer label as a whole word; the end of the text counts as a word boundary.
_LABEL = re.compile(r"(?<!\w)(true|false)(?!\w)", re.IGNORECASE)
# Two newlines with only spaces between them (the reference tokenizer decodes "\n\n" as "\n \n").
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class GenerationConfig(ConfigDict):
    """How to decode.

    - ``max_new_tokens``: most tokens generated per sequence.
    - ``temperature``: 0 decodes greedily (argmax); above 0 samples from ``softmax(logits / temperature)``
      (computed as ``softmax((logits - max) / temperature)``, so a tiny temperature gives the argmax, never NaN).
    - ``top_p``: nucleus sampling, from the fewest most likely tokens whose probability reaches ``top_p``
      (1 keeps every token).
    - ``seed``: seed of the sampling streams (see :func:`generate`).
    - ``batch_size``: most sequences decoded together; bounds memory (the KV cache holds ``batch_size`` x
      (prompt + ``max_new_tokens``) positions per layer).
    - ``num_samples``: sequences per prompt (a GRPO-style group), which needs ``temperature > 0``.
    - ``stop_at_answer``: also end a sequence once its text holds the answer label (True/False) or a blank
      line, for models that write no EOS after the label (a hub model prompted few-shot). EOS always ends
      a sequence.
    - ``drop_finished``: take a sequence out of its batch once it stops, so the forwards shrink as sequences end
      (the same tokens, faster when lengths vary). Hooks then see a batch whose rows change between steps: use it
      with no hooks or with hooks that treat every row alike (as steering's do). By default finished sequences
      keep decoding (their tokens dropped) and every hook sees one fixed batch.

    >>> GenerationConfig(temperature=0.7, top_p=0.9, num_samples=4).num_samples
    4
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    num_samples: int = 1
    stop_at_answer: bool = True
    drop_finished: bool = False

    def __post_init__(self) -> None:
        check_int(self.max_new_tokens, "max_new_tokens", low=1, hint="pass a whole number of tokens, e.g. 64")
        check_float(self.temperature, "temperature", low=0, hint="0 decodes greedily, above 0 samples")
        check_float(self.top_p, "top_p", low=0, high=1, low_open=True, hint="1 = no nucleus filtering")
        check_int(self.seed, "seed")
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.num_samples, "num_samples", low=1)
        check_bool(self.stop_at_answer, "stop_at_answer")
        check_bool(self.drop_finished, "drop_finished")
        if self.num_samples > 1 and self.temperature == 0:
            raise ReasonlensError(f"num_samples={self.num_samples} with greedy decoding gives identical copies; "
                                  "set temperature > 0 to sample a group")


@dataclass(frozen=True)
class Generation:
    """Decoded sequences, ``num_samples`` per prompt in prompt order (sequence ``i`` continues prompt
    ``prompt_index[i]``).

    - ``prompt_ids``: the prompt tokens (BOS included where the model prepends it), no padding.
    - ``output_ids``: the generated tokens, no padding, ending with the stop token(s) when one was produced.
    - ``texts``: the decoded continuation (special tokens such as EOS left out).
    - ``answers``: ``"True"``, ``"False"`` or ``None``: the first answer label in the text.
    - ``stop_reasons``: ``"eos"``, ``"answer"``, ``"blank_line"`` or ``"length"`` (``max_new_tokens`` reached).
    - ``steps``: the token spans of the CoT steps (sentences) within ``output_ids`` (from
      :func:`reasonlens.spans.step_spans`; ``span.shift(len(prompt_ids[i]))`` gives positions in the full
      sequence), or ``None`` for an output whose text does not re-tokenize to exactly its tokens.
    """

    prompt_ids: list[list[int]]
    output_ids: list[list[int]]
    texts: list[str]
    answers: list[str | None]
    stop_reasons: list[str]
    prompt_index: list[int]
    steps: list[list[TokenSpan] | None]

    def __len__(self) -> int:
        return len(self.output_ids)

    def sequences(self) -> list[list[int]]:
        """Prompt plus output tokens of every sequence (what a forward pass over the trajectory reads)."""
        return [p + o for p, o in zip(self.prompt_ids, self.output_ids)]


_BLOCK_HOOK = re.compile(r"blocks\.(\d+)\.")


def first_hooked_block(hooks: Sequence[FwdHook]) -> int:
    """The lowest block any of ``hooks`` sits in: blocks before it run as without the hooks. 0 when a hook is a
    filter or not inside a block (embeddings, the final norm), or there are no hooks.

    >>> first_hooked_block([("blocks.3.hook_resid_post", print), ("blocks.2.attn.hook_z", print)])
    2
    """
    found = [_BLOCK_HOOK.match(name) if isinstance(name, str) else None for name, _ in hooks]
    if not found or not all(found):
        return 0
    return min(int(m.group(1)) for m in found)


class PromptPrefill:
    """The prompt passes of :func:`generate` run once without hooks and kept per batch (each layer's keys and
    values, the residual entering each block), so that decoding the same prompts again under hooks that start at
    block ``l`` (:func:`first_hooked_block`) runs each prompt pass from block ``l`` on: steering many component
    sets on one question set pays for the blocks below them once. The tokens are those of a run without it.

    Kept for batches of exactly the same token rows (another batch is computed and kept on first use); memory:
    ``n_layers x (2 x kv_heads x d_head + d_model)`` floats per prompt token. Nothing is kept, and each prompt
    pass runs whole, where the model cannot be entered mid-stack (:func:`reasonlens.runtime.can_enter_at_block`)
    or its cache is not a plain ``DynamicCache``.

    >>> from reasonlens.model import load_model
    >>> model = load_model("reasonlens-main")
    >>> prompts = ["Q: Wumpuses are wooden. Rex is a wumpus. True or false: Rex is wooden.\\nA:"]
    >>> hooks = [("blocks.3.hook_resid_post", lambda resid, hook: resid * 0.9)]
    >>> prefill = PromptPrefill()
    >>> generate(model, prompts, fwd_hooks=hooks, prefill=prefill).texts == generate(model, prompts,
    ...                                                                               fwd_hooks=hooks).texts
    True
    """

    def __init__(self) -> None:
        self._batches: dict[tuple[tuple[int, ...], ...], tuple[Any, list[Tensor]] | None] = {}

    def __len__(self) -> int:
        return len(self._batches)

    def prepare(self, model: TransformerBridge, rows: list[list[int]], pad_id: int) -> None:
        """Run and keep the unhooked prompt pass of ``rows`` (left-padded as :func:`generate` pads them) unless
        it is kept already. Call outside any hook context."""
        from reasonlens.runtime import plain_kv_cache, saving_hooks, site_hook

        key = tuple(tuple(row) for row in rows)
        if key in self._batches:
            return
        ids, mask = left_pad(rows, pad_id)
        device = model.cfg.device
        ids, mask = ids.to(device), mask.to(device)
        store: dict[str, Tensor] = {}
        names = [site_hook("resid_pre", layer) for layer in range(model.cfg.n_layers)]
        with torch.no_grad(), model.hooks(fwd_hooks=saving_hooks(store, dict.fromkeys(names))):
            _, cache = model(ids, attention_mask=mask, position_ids=left_padded_positions(mask), use_cache=True,
                             return_type="logits_and_cache")
        self._batches[key] = (cache, [store[name] for name in names]) if plain_kv_cache(cache) else None

    def kept(self, rows: list[list[int]]) -> tuple[Any, list[Tensor]] | None:
        """The kept cache and block inputs of ``rows`` (None when nothing is kept for them)."""
        return self._batches.get(tuple(tuple(row) for row in rows))


def _encode_prompts(model: TransformerBridge, prompts: object) -> list[list[int]]:
    if isinstance(prompts, str):
        raise ReasonlensError("prompts is one string; pass a list of prompts, e.g. [prompt]")
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ReasonlensError("no prompts to decode; pass a non-empty list of strings or token-id lists")
    if all(isinstance(p, str) for p in prompts):
        ids = [model.to_tokens(p, truncate=False)[0].tolist() for p in prompts]
        empty = [i for i, p in enumerate(ids) if not p]
        if empty:
            raise ReasonlensError(f"prompt {empty[0]} has no tokens; pass at least one token (e.g. BOS)")
        return ids
    if any(isinstance(p, str) for p in prompts):
        raise ReasonlensError("prompts mix strings and token-id lists; pass all strings or all token-id lists")
    return check_token_lists(model, prompts)


def tempered_probs(logits: Float[Tensor, "batch vocab"], temperature: float) -> Float[Tensor, "batch vocab"]:
    """``softmax(logits / temperature)`` in float64, computed as ``softmax((logits - max) / temperature)``: the
    same distribution, but a tiny positive temperature gives the argmax (ties shared) instead of ``inf / inf``
    = NaN. Logits that are NaN (a broken model) are a :class:`ReasonlensError`."""
    shifted = logits.double() - logits.double().amax(-1, keepdim=True)
    probs = torch.softmax(shifted / temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise ReasonlensError("the model's next-token logits are NaN or infinite, so there is nothing to sample "
                              "from; check the model's weights and dtype (float32 is the safe choice)")
    return probs


def nucleus(probs: Float[Tensor, "batch vocab"], top_p: float) -> Float[Tensor, "batch vocab"]:
    """``probs`` with every token outside the nucleus set to 0 (not renormalised): the fewest most likely tokens
    whose probability reaches ``top_p`` stay (1 keeps every token). Sampling draws from what is left."""
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # the mass before the token already reaches top_p
    return probs.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), 0.0)


def _eos_ids(model: TransformerBridge, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    for config in (model.original_model.config, getattr(model.original_model, "generation_config", None)):
        eos = getattr(config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos])
    return frozenset(i for i in ids if i is not None)


def _next_tokens(logits: Float[Tensor, "batch vocab"], config: GenerationConfig,
                 rngs: list[random.Random]) -> Int[Tensor, " batch"]:
    """Greedy argmax, or inverse-CDF sampling in token-id order with one uniform per row from its own stream."""
    if config.temperature == 0:
        return logits.argmax(-1)
    cdf = nucleus(tempered_probs(logits, config.temperature), config.top_p).cumsum(-1)
    u = torch.tensor([rng.random() for rng in rngs], dtype=cdf.dtype, device=cdf.device)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(logits.shape[-1] - 1)


def _stop_reason(token: int, text: str, eos_ids: frozenset[int], stop_at_answer: bool) -> str | None:
    if token in eos_ids:
        return "eos"
    if stop_at_answer and _LABEL.search(text):
        return "answer"
    if stop_at_answer and _BLANK_LINE.search(text):
        return "blank_line"
    return None


def _decode_batch(model: TransformerBridge, rows: list[list[int]], config: GenerationConfig,
                  rngs: list[random.Random], tokenizer: PreTrainedTokenizerBase, pad_id: int,
                  eos_ids: frozenset[int], kept: tuple[Any, list[Tensor]] | None = None,
                  block: int = 0) -> tuple[list[list[int]], list[str]]:
    """Decode one batch; with ``kept`` (a :class:`PromptPrefill`'s pass of these rows) the prompt pass enters at
    ``block`` and takes the keys and values of the blocks below it from ``kept``."""
    batch = len(rows)
    ids, mask = left_pad(rows, pad_id)
    positions = left_padded_positions(mask)
    device = model.cfg.device
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    with enter_at_block(model, BlockEntry(block, kept[1][block]) if kept is not None else None):
        logits, cache = model(ids, attention_mask=mask, position_ids=positions, use_cache=True,
                              return_type="logits_and_cache")
    if kept is not None:
        for below, layer in zip(kept[0].layers[:block], cache.layers[:block]):
            layer.update(below.keys, below.values)  # the skipped blocks left these layers empty
    next_pos = positions[:, -1:] + 1
    outs: list[list[int]] = [[] for _ in rows]
    reasons: list[str | None] = [None] * batch
    alive = list(range(batch))  # the sequence each row of the current forward decodes
    for step in range(config.max_new_tokens):
        new = _next_tokens(logits[:, -1], config, [rngs[i] for i in alive])
        tokens = new.tolist()
        active = [r for r, i in enumerate(alive) if reasons[i] is None]
        for r in active:
            outs[alive[r]].append(tokens[r])
        texts = tokenizer.batch_decode([outs[alive[r]] for r in active], skip_special_tokens=True) \
            if config.stop_at_answer else [""] * len(active)
        for r, text in zip(active, texts):
            reasons[alive[r]] = _stop_reason(outs[alive[r]][-1], text, eos_ids, config.stop_at_answer)
        if step == config.max_new_tokens - 1 or all(r is not None for r in reasons):
            break
        if config.drop_finished and len(active) < len(alive):
            keep = [r for r in range(len(alive)) if reasons[alive[r]] is None]
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_pos, new = mask[index], next_pos[index], new[index]
            alive = [alive[r] for r in keep]
        # Otherwise finished rows keep decoding (their tokens are dropped) so every hook sees one fixed batch.
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        logits, cache = model(new[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache,
                              return_type="logits_and_cache")
        next_pos = next_pos + 1
    return outs, [r or "length" for r in reasons]


def _step_spans(tokenizer: PreTrainedTokenizerBase, text: str, output: list[int],
                reason: str) -> list[TokenSpan] | None:
    from reasonlens.spans import step_spans

    body = output[:-1] if reason == "eos" else output
    if tokenizer(text, add_special_tokens=False)["input_ids"] != body:
        return None
    return step_spans(tokenizer, text, add_special_tokens=False, snap=True)


def generate(model: TransformerBridge, prompts: Sequence[str] | Sequence[Sequence[int]],
             config: GenerationConfig = GenerationConfig(), *, fwd_hooks: Sequence[FwdHook] = (),
             prefill: PromptPrefill | None = None, progress: bool = False) -> Generation:
    """Decode ``config.num_samples`` continuations of every prompt (strings, tokenized by ``model.to_tokens``
    with its BOS convention, or token-id lists used as given).

    ``fwd_hooks`` are TransformerLens ``(hook_name_or_filter, hook_fn)`` pairs, active on every forward pass
    (the prompt pass and each new token; see the module doc for shapes). Sequences are grouped into batches
    of ``config.batch_size``, longest prompts first. Sampling gives every sequence its own random stream,
    seeded by ``(config.seed, prompt index, sample index)`` and read once per step by inverse-CDF sampling in
    token-id order: a sequence's tokens do not depend on the batch size or on the other prompts, and runs
    that differ only in their hooks share random numbers, which couples their samples. ``prefill``: a
    :class:`PromptPrefill` shared by runs on the same prompts, which then pay once for the blocks below the
    first hooked one. Raises
    :class:`ReasonlensError` for a prompt that does not fit the context with ``max_new_tokens`` more tokens.
    """
    from tqdm.auto import tqdm

    tokenizer = require_tokenizer(model)
    if not isinstance(config, GenerationConfig):
        raise ReasonlensError(f"config must be a GenerationConfig, got {type(config).__name__}; pass e.g. "
                              "GenerationConfig(max_new_tokens=64)")
    prompt_ids = _encode_prompts(model, prompts)
    check_context(model, [len(p) for p in prompt_ids], extra=config.max_new_tokens)
    hooks = [(check_hook_name(model, name) if isinstance(name, str) else name, fn) for name, fn in fwd_hooks]
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = pad_token_id(model)

    seqs = [(p, s) for p in range(len(prompt_ids)) for s in range(config.num_samples)]
    order = sorted(range(len(seqs)), key=lambda i: -len(prompt_ids[seqs[i][0]]))
    batches = [order[k:k + config.batch_size] for k in range(0, len(order), config.batch_size)]
    outputs: list[list[int]] = [[] for _ in seqs]
    reasons = [""] * len(seqs)
    block = first_hooked_block(hooks) if prefill is not None else 0
    if block and not can_enter_at_block(model):
        block = 0
    batch_rows = [[prompt_ids[seqs[i][0]] for i in batch] for batch in batches]
    if block:
        for rows in batch_rows:
            prefill.prepare(model, rows, pad_id)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for batch, rows in tqdm(list(zip(batches, batch_rows)), desc="generate", unit="batch",
                                disable=not progress):
            rngs = [random.Random(f"{config.seed}/{seqs[i][0]}/{seqs[i][1]}") for i in batch]
            outs, why = _decode_batch(model, rows, config, rngs, tokenizer, pad_id, eos_ids,
                                      kept=prefill.kept(rows) if block else None, block=block)
            for i, out, reason in zip(batch, outs, why):
                outputs[i], reasons[i] = out, reason

    texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    answers = [m.group(1).capitalize() if (m := _LABEL.search(t)) else None for t in texts]
    return Generation(
        prompt_ids=[list(prompt_ids[p]) for p, _ in seqs], output_ids=outputs, texts=texts, answers=answers,
        stop_reasons=reasons, prompt_index=[p for p, _ in seqs],
        steps=[_step_spans(tokenizer, t, o, r) for t, o, r in zip(texts, outputs, reasons)],
    )
