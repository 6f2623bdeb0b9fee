"""Sufficiency and attainability of step subsequences (the step-importance paper's Eqs. 1-2), batched.

A subsequence ``T`` of a :class:`~reasonlens.importance.chains.Chain` is a list of kept step indices (``[]`` is
the empty chain). Every readout here runs all subsets of one chain through the model in left-padded batches
(attention mask and position ids counted from each row's first real token, as :mod:`reasonlens.generation`
decodes), one forward per ``batch_size`` rows.

**Answer readout.** The paper appends an answer-eliciting suffix ``σ`` (``So the answer is \\boxed{``) and
samples an answer. The reference models answer right after the last step, so here the readout is the
next-token distribution after ``x ∘ T ∘ σ`` **restricted to the two label tokens** (a softmax over the logits
of ``true`` and ``false`` only): the restriction forces an answer wherever the model stands, which plays the
suffix's part; ``ScoringConfig.suffix`` (default empty) can still add a textual one.

**Necessity** is "the empty chain is not sufficient": ``sufficiency([]) < tau``. The paper asks the model
to be wrong in 4 of 5 samples without a chain; with two labels chance is 50 %, so its adaptation is that the
empty chain does not reach the sufficiency threshold.

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> from reasonlens.importance.chains import chains_from_examples
>>> model = load_model("reasonlens-main")
>>> chain = chains_from_examples(model, generate(1, hops=2, seed=3))[0]
>>> suff, attn = SubsetScorer(model, chain).scores([[0, 1, 2, 3, 4], []])
>>> bool(suff[0] > 0.8), attn.tolist()
(True, [1.0, 0.0])
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
from reasonlens.results import ConfigDict
from reasonlens.runtime import KVPrefix
from reasonlens.validation import check_context, check_float, check_int, check_int_list

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SufficiencyMode = Literal["deterministic", "sampled"]


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class ScoringConfig(ConfigDict):
    """How subsets are scored.

    - ``tau``: the sufficiency / attainability threshold (paper: 0.8).
    - ``mode``: ``"deterministic"`` scores sufficiency as the restricted P(gold label); ``"sampled"`` as the
      fraction of ``k_samples`` labels drawn from the restricted distribution at ``temperature`` that equal
      the gold one (paper Eq. 1), seeded by ``seed``, the chain and the subset (reproducible, independent of
      batching and call order).
    - ``suffix``: text appended after the kept steps before the readout (encoded without special tokens).
    - ``batch_size``: rows per forward.
    """

    tau: float = 0.8
    mode: SufficiencyMode = "deterministic"
    k_samples: int = 10
    temperature: float = 0.6
    seed: int = 0
    suffix: str = ""
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_float(self.tau, "tau", low=0, high=1, low_open=True)
        if not isinstance(self.mode, str) or self.mode not in ("deterministic", "sampled"):
            raise ReasonlensError(f"unknown sufficiency mode {self.mode!r}; choose 'deterministic' or 'sampled'")
        check_int(self.k_samples, "k_samples", low=1)
        check_float(self.temperature, "temperature", low=0, low_open=True)
        check_int(self.seed, "seed")
        if not isinstance(self.suffix, str):
            raise ReasonlensError(f"suffix must be a string (text after the kept steps), got {self.suffix!r}")
        check_int(self.batch_size, "batch_size", low=1)


def encode_suffix(model: TransformerBridge, suffix: str) -> list[int]:
    """Token ids of ``suffix`` (no special tokens); a :class:`ReasonlensError` when a non-empty suffix encodes
    to nothing or to unknown tokens."""
    if not suffix:
        return []
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    ids = tok(suffix, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ReasonlensError(f"the suffix {suffix!r} encodes to no tokens in this tokenizer; pass a suffix with "
                              "words the tokenizer knows, or '' for none")
    if tok.unk_token_id is not None and tok.unk_token_id in ids:
        raise ReasonlensError(f"the suffix {suffix!r} has words this tokenizer does not know (they encode to "
                              f"{tok.unk_token!r}); use words of its vocabulary, or '' for none")
    return list(ids)


def _prompt_prefix(model: TransformerBridge, chain: Chain) -> KVPrefix | None:
    """The chain's prompt but its last token, run once (see :func:`_forward_rows`)."""
    return KVPrefix.of(model, chain.prompt_ids[:-1])


def _forward_rows(model: TransformerBridge, prefix: KVPrefix | None, prompt_ids: Sequence[int],
                  continuations: Sequence[Sequence[int]], n_scored: Sequence[int], answer_ids: tuple[int, int],
                  batch_size: int) -> tuple[Float[Tensor, "row 2"], Float[Tensor, " row"]]:
    """For each continuation ``c`` of the prompt: the logits of the two answer tokens after ``prompt + c``, and the
    mean negative log-likelihood of the first ``n_scored`` tokens of ``c`` (teacher-forced; NaN for 0).

    ``prefix`` is the prompt but its last token, run once (:func:`_prompt_prefix`); each row is the last prompt
    token and its continuation, right-padded, read after the prefix's cached keys and values (with
    ``prefix=None``, where the model's cache cannot be reused, the whole prompt runs per row)."""
    from reasonlens.runtime import pad_token_id, run_continuations

    check_int(batch_size, "batch_size", low=1)
    check_context(model, [len(prompt_ids) + len(c) for c in continuations], item="subset (prompt + kept steps)",
                  fix="use shorter chains or a model with a longer context")
    lead = list(prompt_ids[-1:]) if prefix is not None else list(prompt_ids)
    offset = len(lead) - 1  # column of the last prompt token in a row
    device = model.cfg.device
    answer = torch.tensor(answer_ids, device=device)
    pairs, nlls = [], []
    for start in range(0, len(continuations), batch_size):
        chunk = [lead + list(c) for c in continuations[start:start + batch_size]]
        with torch.no_grad():
            logits = run_continuations(model, prefix, chunk, pad_token_id(model))
        last = torch.tensor([len(row) - 1 for row in chunk], device=device)
        pairs.append(logits[torch.arange(len(chunk), device=device), last][:, answer].float().cpu())
        for r, (row, n) in enumerate(zip(chunk, n_scored[start:start + batch_size])):
            if n == 0:
                nlls.append(torch.tensor(math.nan, dtype=torch.float64))
                continue
            logp = logits[r, offset:offset + n].double().log_softmax(-1)
            target = torch.tensor(row[offset + 1:offset + 1 + n], device=device)
            nlls.append(-logp.gather(-1, target[:, None]).mean().cpu())
    pair = torch.cat(pairs)
    if not torch.isfinite(pair).all():
        raise ReasonlensError("the model's answer logits are NaN or infinite for some subsets; check the model's "
                              "weights and dtype (float32 is the safe choice)")
    return pair, torch.stack(nlls)


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


def answer_probabilities(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]], *,
                         suffix_ids: Sequence[int] = (), batch_size: int = 32) -> Float[Tensor, " subset"]:
    """P(gold label | x ∘ T ∘ σ) for each subset ``T`` in ``keeps``, restricted to the two answer tokens
    (a softmax over their two logits at the last position)."""
    chain.check(model)
    kept = _check_keeps(chain, keeps)
    if not kept:
        return torch.zeros(0)
    rows = [chain.token_ids(k, suffix_ids)[chain.prompt_len:] for k in kept]
    pair, _ = _forward_rows(model, _prompt_prefix(model, chain), chain.prompt_ids, rows, [0] * len(rows),
                            chain.answer_ids, batch_size)
    return pair.softmax(-1)[:, 0 if chain.label else 1]


class SubsetScorer:
    """Sufficiency and attainability of subsets of one chain, memoised per subset.

    One :meth:`scores` call runs every subset not seen before in one batched pass, together (on the first
    call) with the two attainability references: the full chain ``o`` and ``σ ∘ a*`` (the suffix then the
    gold answer token, right after the prompt).
    """

    def __init__(self, model: TransformerBridge, chain: Chain, config: ScoringConfig = ScoringConfig()) -> None:
        chain.check(model)
        self.model, self.chain, self.config = model, chain, config
        self.suffix_ids = encode_suffix(model, config.suffix)
        self._seen: dict[tuple[int, ...], tuple[float, float]] = {}
        self._reference: tuple[float, float] | None = None  # PPL(o|x), PPL(σ∘a*|x)
        self._prefix = _prompt_prefix(model, chain)

    def _sufficiency(self, pair: Float[Tensor, "row 2"], kept: list[tuple[int, ...]]) -> list[float]:
        gold = 0 if self.chain.label else 1
        cfg = self.config
        if cfg.mode == "deterministic":
            return pair.softmax(-1)[:, gold].tolist()
        from reasonlens.generation import tempered_probs

        p = tempered_probs(pair, cfg.temperature).to(pair.dtype)[:, gold]
        out = []
        for prob, keep in zip(p.tolist(), kept):
            gen = torch.Generator().manual_seed(stable_seed(cfg.seed, self.chain.prompt_ids, self.chain.step_ids, keep))
            out.append(float((torch.rand(cfg.k_samples, generator=gen, dtype=torch.float64) < prob).double().mean()))
        return out

    @staticmethod
    def _attainability(ppl: float, keep: tuple[int, ...], reference: tuple[float, float]) -> float:
        ppl_o, ppl_answer = reference
        return 1.0 - (ppl - ppl_o) / (ppl_answer - ppl_o) if keep else 0.0

    def scores(self, keeps: Sequence[Sequence[int]]) -> tuple[Float[Tensor, " subset"], Float[Tensor, " subset"]]:
        """``(sufficiency, attainability)`` of each subset in ``keeps`` (step indices; ``[]`` = empty chain).

        Attainability is ``1 - (PPL(T|x) - PPL(o|x)) / (PPL(σ∘a*|x) - PPL(o|x))`` with ``PPL(T|x)`` the
        exponentiated mean teacher-forced NLL of ``T``'s tokens after the prompt; it is 0 for ``[]``.
        """
        kept = _check_keeps(self.chain, keeps)
        chain, full = self.chain, tuple(range(len(self.chain)))
        todo = list(dict.fromkeys(k for k in kept if k not in self._seen))
        if self._reference is None and full not in todo:
            todo.append(full)
        if todo:
            rows = [chain.token_ids(k, self.suffix_ids)[chain.prompt_len:] for k in todo]
            n_scored = [sum(len(chain.step_ids[i]) for i in k) for k in todo]
            if self._reference is None:
                rows.append(self.suffix_ids + [chain.gold_answer_id])
                n_scored.append(len(rows[-1]))
            pair, nll = _forward_rows(self.model, self._prefix, chain.prompt_ids, rows, n_scored, chain.answer_ids,
                                      self.config.batch_size)
            ppl = nll.exp().tolist()
            if self._reference is None:
                self._reference = (ppl[todo.index(full)], ppl[-1])
                ppl_o, ppl_answer = self._reference
                if not (math.isfinite(ppl_answer - ppl_o) and ppl_answer != ppl_o):
                    raise ReasonlensError(
                        f"attainability is undefined for this chain: PPL(σ∘a*|x) = {ppl_answer:.4g} and PPL(o|x) = "
                        f"{ppl_o:.4g} (their difference must be finite and non-zero); check the model's weights "
                        "and dtype")
            for k, s, p in zip(todo, self._sufficiency(pair[:len(todo)], todo), ppl):
                self._seen[k] = (s, self._attainability(p, k, self._reference))
        out = torch.tensor([self._seen[k] for k in kept], dtype=torch.float64).reshape(len(kept), 2)
        return out[:, 0].float(), out[:, 1].float()


def sufficiency(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]],
                config: ScoringConfig = ScoringConfig()) -> Float[Tensor, " subset"]:
    """Sufficiency of each subset (see :class:`ScoringConfig` for the deterministic and sampled modes)."""
    return SubsetScorer(model, chain, config).scores(keeps)[0]


def attainability(model: TransformerBridge, chain: Chain, keeps: Sequence[Sequence[int]],
                  config: ScoringConfig = ScoringConfig()) -> Float[Tensor, " subset"]:
    """Attainability of each subset (paper Eq. 2; 1 for the full chain, 0 for the empty one)."""
    return SubsetScorer(model, chain, config).scores(keeps)[1]
