"""Sufficiency, attainability and necessity of step subsequences (the step-importance paper's Eqs. 1-2 as its
released code computes them), batched.

A subsequence ``T`` of a :class:`~reasonlens.importance.chains.Chain` is a list of kept step indices (``[]`` is
the empty chain). Every subset of one chain runs through the model in one pass of right-padded rows after the
prompt's cached keys and values; each row is ``x ∘ T ∘ σ ∘ a*`` (prompt, kept steps, the answer-eliciting
suffix ``σ``, the gold answer token), so one forward gives both readouts:

- **Sufficiency** (Eq. 1): the model's next token after ``x ∘ T ∘ σ`` over the **full vocabulary**, at
  ``temperature`` and nucleus ``top_p`` (paper: 0.6, 0.95). ``mode="sampled"`` (the paper's code) is the
  fraction of ``k_samples`` (5) draws that are the gold label (any single-token spelling of the word:
  ``True``, `` true``, ...), seeded by ``seed``, the chain and the subset (reproducible, independent of batching
  and call order); ``mode="expected"`` is that draw's probability of being right, the sampled score's expected
  value (no sampling noise).
- **Attainability** (Eq. 2): ``1 - (PPL(T) - PPL(o)) / (PPL(σ∘a*) - PPL(o))``, each perplexity over the **whole
  string** ``x ∘ T ∘ σ ∘ a*`` (prompt included, teacher-forced, full vocabulary), ``o`` the full chain; as the
  released code computes it (the paper's text conditions on ``x``, which on a small model makes every
  ``PPL(σ∘a*|x)`` huge and attainability vacuous). 1 for the full chain, 0 for the empty one.
- **Necessity**: a chain needs its CoT when at most ``necessity_max_correct`` (1) of ``k_samples`` (5) answers
  without it are right (``sufficiency([]) * k_samples <= necessity_max_correct``).

``σ`` defaults to :data:`~reasonlens.ontology.prompt.ANSWER_NOW` (``" So the answer is"``), which the reference
models (vocabulary version 2) answer after at any point of a chain; for another model pass the suffix it
answers after.

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> from reasonlens.importance.chains import chains_from_examples
>>> model = load_model("reasonlens-main")
>>> chain = chains_from_examples(model, generate(1, hops=2, seed=3))[0]
>>> suff, attn = SubsetScorer(model, chain).scores([[0, 1, 2, 3, 4], []])  # the full chain, no chain
>>> suff[0].item(), attn.tolist(), round(suff[1].item() * 5)  # right draws of 5 without a chain: 0-5
(1.0, [1.0, 0.0], 3)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.importance.chains import Chain
from reasonlens.ontology.prompt import ANSWER_NOW
from reasonlens.results import ConfigDict
from reasonlens.runtime import KVPrefix
from reasonlens.validation import check_context, check_float, check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SufficiencyMode = Literal["sampled", "expected"]


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class ScoringConfig(ConfigDict):
    """How subsets are scored (defaults: the paper's code).

    - ``tau``: the sufficiency / attainability threshold (0.8).
    - ``mode``: ``"sampled"`` (``k_samples`` draws, the fraction right) or ``"expected"`` (the probability that
      a draw is right); draws at ``temperature`` with nucleus ``top_p``, seeded by ``seed``.
    - ``necessity_max_correct``: a chain needs its CoT when at most this many of ``k_samples`` answers without
      it are right (paper: 1 of 5).
    - ``suffix``: the answer-eliciting text after the kept steps (encoded without special tokens).
    - ``batch_size``: rows per forward.
    """

    tau: float = 0.8
    mode: SufficiencyMode = "sampled"
    k_samples: int = 5
    temperature: float = 0.6
    top_p: float = 0.95
    necessity_max_correct: int = 1
    seed: int = 0
    suffix: str = ANSWER_NOW
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_float(self.tau, "tau", low=0, high=1, low_open=True)
        if not isinstance(self.mode, str) or self.mode not in ("sampled", "expected"):
            raise ReasonlensError(f"unknown sufficiency mode {self.mode!r}; choose 'sampled' or 'expected'")
        check_int(self.k_samples, "k_samples", low=1)
        check_float(self.temperature, "temperature", low=0, low_open=True)
        check_float(self.top_p, "top_p", low=0, high=1, low_open=True, hint="1 = no nucleus filtering")
        check_int(self.necessity_max_correct, "necessity_max_correct", low=0)
        check_int(self.seed, "seed")
        if not isinstance(self.suffix, str):
            raise ReasonlensError(f"suffix must be a string (text after the kept steps), got {self.suffix!r}")
        if not self.suffix.strip():
            raise ReasonlensError("sufficiency is read after an answer-eliciting suffix, and this one is empty; pass "
                                  f"the text your model answers after (the reference models: {ANSWER_NOW!r})")
        check_int(self.batch_size, "batch_size", low=1)


def encode_suffix(model: TransformerBridge, suffix: str) -> list[int]:
    """Token ids of ``suffix`` (no special tokens); a :class:`ReasonlensError` when it encodes to nothing or to
    unknown tokens (a model that was not taught the suffix, such as the version-1 reference vocabulary)."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    ids = tok(suffix, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ReasonlensError(f"the suffix {suffix!r} encodes to no tokens in this tokenizer; pass a suffix with "
                              "words the tokenizer knows")
    if tok.unk_token_id is not None and tok.unk_token_id in ids:
        raise ReasonlensError(f"the suffix {suffix!r} has words this tokenizer does not know (they encode to "
                              f"{tok.unk_token!r}), so the model cannot have learnt to answer after it; use a model "
                              "that answers on request (the reference models of vocabulary version 2) or pass "
                              "ScoringConfig(suffix=...) in words of its vocabulary")
    return list(ids)


def answer_token_sets(model: TransformerBridge) -> tuple[frozenset[int], frozenset[int]]:
    """The single-token spellings of ``True`` and of ``False`` (``True``, ``true``, ``TRUE``, each with and
    without a leading space) in this tokenizer: an answer drawn after the suffix is right when it is one of the
    gold label's. A :class:`ReasonlensError` when a label has none, or a token spells both."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    sets = []
    for word in ("True", "False"):
        ids = set()
        for spelling in (word, word.lower(), word.upper()):
            for text in (spelling, " " + spelling):
                enc = tok(text, add_special_tokens=False)["input_ids"]
                if len(enc) == 1 and enc[0] != tok.unk_token_id:
                    ids.add(enc[0])
        if not ids:
            raise ReasonlensError(f"the label {word!r} is several tokens in every spelling in this tokenizer; the "
                                  "sufficiency readout draws one answer token, so use a model whose tokenizer has "
                                  f"{word!r} as one token")
        sets.append(frozenset(ids))
    if sets[0] & sets[1]:
        raise ReasonlensError("a token spells both True and False in this tokenizer; the answers cannot be told apart")
    return sets[0], sets[1]


def _prompt_prefix(model: TransformerBridge, chain: Chain) -> KVPrefix | None:
    """The chain's prompt but its last token, run once (see :func:`_forward_rows`)."""
    return _prompt_run(model, chain.prompt_ids)[0]


def _prompt_run(model: TransformerBridge, prompt_ids: Sequence[int]) -> tuple[KVPrefix | None, float]:
    """One forward of the prompt but its last token: its keys and values (``None`` where the model's cache cannot be
    reused, or for a one-token prompt) and the summed teacher-forced NLL of the prompt's tokens after the first."""
    from reasonlens.runtime import left_padded_positions

    head = list(prompt_ids[:-1])
    if not head:
        return None, 0.0
    device = model.cfg.device
    mask = torch.ones(1, len(head), dtype=torch.long, device=device)
    with torch.no_grad():
        logits, cache = model(torch.tensor([head], device=device), attention_mask=mask,
                              position_ids=left_padded_positions(mask), use_cache=True, return_type="logits_and_cache")
    target = torch.tensor(prompt_ids[1:], device=device)
    nll = float(-logits[0].double().log_softmax(-1).gather(-1, target[:, None]).sum())
    return KVPrefix.from_cache(cache, mask), nll


def _forward_rows(model: TransformerBridge, prefix: KVPrefix | None, prompt_ids: Sequence[int],
                  continuations: Sequence[Sequence[int]],
                  batch_size: int) -> tuple[Float[Tensor, "row vocab"], Float[Tensor, " row"]]:
    """For each continuation ``c`` of the prompt (kept steps, suffix, then the gold answer token): the logits that
    predict ``c``'s last token (the answer readout), and the summed teacher-forced NLL of all of ``c``'s tokens.

    ``prefix`` is the prompt but its last token, run once (:func:`_prompt_prefix`); each row is the last prompt
    token and its continuation, right-padded, read after the prefix's cached keys and values (with
    ``prefix=None``, where the model's cache cannot be reused, the whole prompt runs per row)."""
    from reasonlens.runtime import pad_token_id, run_continuations

    check_int(batch_size, "batch_size", low=1)
    check_context(model, [len(prompt_ids) + len(c) for c in continuations],
                  item="subset (prompt + kept steps + suffix + answer)",
                  fix="use shorter chains or a model with a longer context")
    lead = list(prompt_ids[-1:]) if prefix is not None else list(prompt_ids)
    offset = len(lead) - 1  # column of the last prompt token in a row
    device = model.cfg.device
    answers, nlls = [], []
    for start in range(0, len(continuations), batch_size):
        chunk = [lead + list(c) for c in continuations[start:start + batch_size]]
        with torch.no_grad():
            logits = run_continuations(model, prefix, chunk, pad_token_id(model))
        readout = torch.tensor([len(row) - 2 for row in chunk], device=device)
        answers.append(logits[torch.arange(len(chunk), device=device), readout].float().cpu())
        for r, row in enumerate(chunk):
            logp = logits[r, offset:len(row) - 1].double().log_softmax(-1)
            target = torch.tensor(row[offset + 1:], device=device)
            nlls.append(-logp.gather(-1, target[:, None]).sum().cpu())
    answer = torch.cat(answers)
    if not torch.isfinite(answer).all():
        raise ReasonlensError("the model's answer logits are NaN or infinite for some subsets; check the model's "
                              "weights and dtype (float32 is the safe choice)")
    return answer, torch.stack(nlls)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (JSON-serialisable), the same in every process."""
    key = json.dumps(parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _check_keeps(chain: Chain, keeps: object) -> list[tuple[int, ...]]:
    if isinstance(keeps, (str, bytes)) or not isinstance(keeps, Sequence):
        raise ReasonlensError(f"keeps must be a list of step-index lists (one per subset), got {keeps!r}")
    out = []
    for keep in keeps:
        kept = sorted(set(check_int_list(keep, "every subset of keeps", allow_empty=True, unique=False,
                                         example="[0, 2]")))
        if kept and not (0 <= kept[0] and kept[-1] < len(chain)):
            raise ReasonlensError(f"step indices {list(keep)} are outside this chain's {len(chain)} steps "
                                  f"(valid: 0..{len(chain) - 1})")
        out.append(tuple(kept))
    return out


def _answer_distribution(logits: Float[Tensor, "row vocab"], temperature: float,
                         top_p: float) -> Float[Tensor, "row vocab"]:
    """The distribution an answer is drawn from: tempered, nucleus-filtered, renormalised (float64)."""
    from reasonlens.generation import nucleus, tempered_probs

    probs = nucleus(tempered_probs(logits, temperature), top_p)
    return probs / probs.sum(-1, keepdim=True)


def _gold_mass(probs: Float[Tensor, "row vocab"], gold: frozenset[int]) -> Float[Tensor, " row"]:
    return probs[:, sorted(gold)].sum(-1)


def answer_probabilities(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]], *,
                         suffix: str = ANSWER_NOW, temperature: float = 1.0, top_p: float = 1.0,
                         batch_size: int = 32) -> Float[Tensor, " subset"]:
    """P(the answer after ``x ∘ T ∘ σ`` is the gold label) for each subset ``T`` in ``keeps``: the mass of the gold
    label's spellings (:func:`answer_token_sets`) in the next-token distribution over the full vocabulary at
    ``temperature`` and ``top_p`` (defaults: the model's own distribution)."""
    chain.check(model)
    kept = _check_keeps(chain, keeps)
    if not kept:
        return torch.zeros(0)
    suffix_ids = encode_suffix(model, suffix)
    gold = answer_token_sets(model)[0 if chain.label else 1]
    rows = [chain.token_ids(k, suffix_ids)[chain.prompt_len:] + [chain.gold_answer_id] for k in kept]
    logits, _ = _forward_rows(model, _prompt_prefix(model, chain), chain.prompt_ids, rows, batch_size)
    return _gold_mass(_answer_distribution(logits, temperature, top_p), gold).float()


class SubsetScorer:
    """Sufficiency and attainability of subsets of one chain, memoised per subset.

    One :meth:`scores` call runs every subset not seen before in one batched pass, together (on the first call)
    with the full chain ``o``, whose perplexity is attainability's reference (the other reference, ``σ∘a*``, is
    the empty subset's string).
    """

    def __init__(self, model: TransformerBridge, chain: Chain, config: ScoringConfig = ScoringConfig()) -> None:
        chain.check(model)
        self.model, self.chain, self.config = model, chain, config
        self.suffix_ids = encode_suffix(model, config.suffix)
        self.gold = answer_token_sets(model)[0 if chain.label else 1]
        self._seen: dict[tuple[int, ...], tuple[float, float]] = {}
        self._ppl: dict[tuple[int, ...], float] = {}
        self._prompt: tuple[KVPrefix | None, float] | None = None  # run when a subset first needs a forward

    def release(self) -> None:
        """Drop the prompt's cached keys and values (the scores stay memoised; a new subset runs the prompt
        again)."""
        self._prompt = None

    def _sufficiency(self, logits: Float[Tensor, "row vocab"], kept: list[tuple[int, ...]]) -> list[float]:
        cfg = self.config
        probs = _answer_distribution(logits, cfg.temperature, cfg.top_p)
        if cfg.mode == "expected":
            return _gold_mass(probs, self.gold).tolist()
        gold = torch.tensor(sorted(self.gold))
        out = []
        for row, keep in zip(probs, kept):
            gen = torch.Generator().manual_seed(stable_seed(cfg.seed, self.chain.prompt_ids, self.chain.step_ids, keep))
            draws = torch.multinomial(row, cfg.k_samples, replacement=True, generator=gen)
            out.append(float(torch.isin(draws, gold).double().mean()))
        return out

    def _attainability(self, keep: tuple[int, ...]) -> float:
        if not keep:
            return 0.0
        ppl_o, ppl_answer = self._ppl[tuple(range(len(self.chain)))], self._ppl[()]
        if not (math.isfinite(ppl_answer - ppl_o) and ppl_answer != ppl_o):
            raise ReasonlensError(
                f"attainability is undefined for this chain: PPL(x∘σ∘a*) = {ppl_answer:.4g} and PPL(x∘o∘σ∘a*) = "
                f"{ppl_o:.4g} (their difference must be finite and non-zero); check the model's weights and dtype")
        return 1.0 - (self._ppl[keep] - ppl_o) / (ppl_answer - ppl_o)

    def scores(self, keeps: Sequence[Sequence[int]]) -> tuple[Float[Tensor, " subset"], Float[Tensor, " subset"]]:
        """``(sufficiency, attainability)`` of each subset in ``keeps`` (step indices; ``[]`` = empty chain)."""
        kept = _check_keeps(self.chain, keeps)
        chain = self.chain
        references = [tuple(range(len(chain))), ()]
        todo = list(dict.fromkeys([*(k for k in kept if k not in self._seen),
                                   *(r for r in references if r not in self._seen)]))
        if todo:
            if self._prompt is None:
                self._prompt = _prompt_run(self.model, chain.prompt_ids)
            prefix, prompt_nll = self._prompt
            rows = [chain.token_ids(k, self.suffix_ids)[chain.prompt_len:] + [chain.gold_answer_id] for k in todo]
            logits, nll = _forward_rows(self.model, prefix, chain.prompt_ids, rows, self.config.batch_size)
            n_predicted = [chain.prompt_len - 1 + len(row) for row in rows]
            for k, total, n in zip(todo, nll.tolist(), n_predicted):
                self._ppl[k] = math.exp((prompt_nll + total) / n)
            for k, s in zip(todo, self._sufficiency(logits, todo)):
                self._seen[k] = (s, math.nan)
        for k in kept:
            if math.isnan(self._seen[k][1]):
                self._seen[k] = (self._seen[k][0], self._attainability(k))
        out = torch.tensor([self._seen[k] for k in kept], dtype=torch.float64).reshape(len(kept), 2)
        return out[:, 0].float(), out[:, 1].float()

    def necessary(self) -> bool:
        """Whether the chain is needed: at most ``necessity_max_correct`` of ``k_samples`` answers without it are
        right (in ``"expected"`` mode: the expected number right)."""
        return needs_chain(float(self.scores([[]])[0][0]), self.config)

    def ppl(self, keep: Sequence[int]) -> float:
        """The whole-string perplexity of ``x ∘ T ∘ σ ∘ a*`` (scored by :meth:`scores` first)."""
        (k,) = _check_keeps(self.chain, [keep])
        if k not in self._ppl:
            self.scores([k])
        return self._ppl[k]


def needs_chain(empty_sufficiency: float, config: ScoringConfig) -> bool:
    """Necessity from the empty chain's sufficiency: at most ``necessity_max_correct`` of ``k_samples`` right."""
    return empty_sufficiency * config.k_samples <= config.necessity_max_correct + 1e-9


def sufficiency(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]],
                config: ScoringConfig = ScoringConfig()) -> Float[Tensor, " subset"]:
    """Sufficiency of each subset (see :class:`ScoringConfig` for the sampled and expected modes)."""
    return SubsetScorer(model, chain, config).scores(keeps)[0]


def attainability(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]],
                  config: ScoringConfig = ScoringConfig()) -> Float[Tensor, " subset"]:
    """Attainability of each subset (paper Eq. 2 as its code computes it; 1 for the full chain, 0 for the empty
    one)."""
    return SubsetScorer(model, chain, config).scores(keeps)[1]
