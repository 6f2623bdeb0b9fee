"""Step-importance labels by removability (the step-importance paper's §2.2 pipeline, activation-based variant,
as its released code runs it).

Per chain (``o = s_1 .. s_n`` after the prompt ``x``; sufficiency, attainability and necessity as in
:mod:`reasonlens.importance.scoring`, read after the answer-eliciting suffix ``σ``):

1. **correct**: a greedy chain's own answer is the gold label (gold chains pass);
2. the full chain must be **sufficient**;
3. **necessity**: at most 1 of 5 answers without the chain are right;
4. **shortcuts** are removed: steps sufficient on their own, steps whose text states the gold label word
   (``true`` / ``false``, any case, as a word) and direct answer statements (a step that starts with Thus,
   Therefore, So, Hence, Consequently, This means, My or The and names "the answer" or "the result" with a
   value); the remaining chain must still be sufficient;
5. the **sufficient prefix** ``T_p``: the shortest prefix of the remaining steps that is sufficient (and, with
   ``use_attainability``, attainable); its length must lie in ``prefix_steps``;
6. **stage 1** (Function 1) prunes ``T_p`` by influence over ``x ∘ T_p ∘ a`` with the **answer step** ``a = σ ∘
   a*`` appended (:func:`~reasonlens.importance.influence.influence_matrix`): from the answer step backwards,
   each kept step keeps the predecessors whose influence on it is at least the value where the descending
   normalised cumulative sum reaches the threshold. The lowest threshold (the most pruning) whose kept set
   ``T_inf`` passes wins; prefix steps outside ``T_inf`` are **removable** (label 1);
7. **stage 2** (Function 2) shrinks ``T_inf`` to ``T*``: its steps, ranked by their mean influence on every
   later step (the column mean over the whole matrix, answer row included, nonzero entries), ascending, are
   removed one at a time while the rest passes (a failed step is re-queued; the search stops when every queued
   step failed since the last removal); the last prefix step is never removed. Steps in ``T*`` are
   **important** (label 0); steps removed in stage 2 stay unlabelled (``None``);
8. **extraction**: with ``require_stage2_removal`` a chain whose stage 2 removed nothing is dropped.

"Passes" means sufficiency ``>= tau`` and, with ``use_attainability``, attainability ``>= tau``. The random
variant (``ranking="random"``) skips stage 1 (``T_inf = T_p``, so nothing is labelled removable) and ranks
stage 2 randomly: the core-size baseline. The oracle (``ranking="oracle"``, gold chains only) reads the
generator's tags: stage 1 drops every redundant prefix step when what is left passes, stage 2 tries redundant steps
first; it shows what the scores allow when the ranking is perfect.

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> from reasonlens.importance.chains import chains_from_examples
>>> model = load_model("reasonlens-main")
>>> labels = label_steps(model, chains_from_examples(model, generate(8, hops=2, seed=5, redundant_step_p=0.5)))
>>> list(labels.filter_counts)[:4]
['total', 'correct', 'sufficient', 'necessary']
>>> all(0 < len(c.core) < c.prefix_len for c in labels.chains)
True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.importance.chains import Chain
from reasonlens.importance.influence import InfluenceMethod, check_influence_method, influence_matrix
from reasonlens.importance.scoring import ScoringConfig, SubsetScorer, needs_chain, stable_seed
from reasonlens.results import ConfigDict
from reasonlens.validation import check_bool, check_float_list, check_int, check_int_list, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PRUNING_THRESHOLDS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)
Ranking = Literal["influence", "random", "oracle"]
LABELS_FILE, TENSORS_FILE = "labels.json", "influence.pt"


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class LabelConfig(ConfigDict):
    """How steps are labelled: ``scoring`` (threshold, readout), the ``influence`` method (and ``ig_steps``)
    and its stage-1 ``thresholds``, the stage-2 ``ranking``, whether subsets must also be attainable, the
    whether a step sufficient on its own is a shortcut (``shortcut_alone``, the paper's first criterion), the
    allowed sufficient-prefix lengths ``prefix_steps`` (min, max; the paper's code keeps 10-200 sentences of
    chains about 100 long, the reference models write 3-15), whether a chain whose stage 2 removed nothing is
    dropped (``require_stage2_removal``, the paper's label extraction), the ``seed`` of the random ranking, and
    ``batch_size`` (rows per influence backward)."""

    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    influence: InfluenceMethod = "gradient"
    ig_steps: int = 5
    thresholds: tuple[float, ...] = PRUNING_THRESHOLDS
    ranking: Ranking = "influence"
    use_attainability: bool = True
    shortcut_alone: bool = True
    prefix_steps: tuple[int, int] = (2, 200)
    require_stage2_removal: bool = True
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.scoring, ScoringConfig):
            raise ReasonlensError(f"scoring must be a ScoringConfig, got {type(self.scoring).__name__}")
        check_influence_method(self.influence)
        if not isinstance(self.ranking, str) or self.ranking not in ("influence", "random", "oracle"):
            raise ReasonlensError(f"unknown ranking {self.ranking!r}; choose 'influence', 'random' or 'oracle'")
        thresholds = check_float_list(self.thresholds, "thresholds", low=0, high=1, unique=True, example="(0.1, 0.2)")
        object.__setattr__(self, "thresholds", tuple(sorted(thresholds)))
        check_int(self.ig_steps, "ig_steps", low=1)
        check_bool(self.use_attainability, "use_attainability")
        bounds = check_int_list(self.prefix_steps, "prefix_steps", low=1, unique=False, example="(2, 200)")
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ReasonlensError(f"prefix_steps must be (min, max) with min <= max, got {self.prefix_steps!r}")
        object.__setattr__(self, "prefix_steps", tuple(bounds))
        check_bool(self.require_stage2_removal, "require_stage2_removal")
        check_bool(self.shortcut_alone, "shortcut_alone")
        check_int(self.seed, "seed")
        check_int(self.batch_size, "batch_size", low=1)


@dataclass
class ChainLabels:
    """The labels of one chain (``index``: its position in the chains given to :func:`label_steps`).

    ``labels`` has one entry per step of the chain: 1 removable (in the prefix, outside ``t_inf``), 0 important
    (in ``core``), ``None`` otherwise (shortcuts, steps after the prefix, stage-2 removals). ``prefix``,
    ``shortcut_steps``, ``t_inf`` and ``core`` are chain step indices; ``influence`` is the influence matrix over
    the prefix steps and the answer step (its last row and column; ``None`` for the random ranking);
    ``threshold`` is the stage-1 threshold chosen (``None``
    when stage 1 was skipped or no threshold's mask passed, so ``t_inf`` is the whole prefix); ``scores`` holds
    the sufficiency / attainability of the subsets the pipeline decided on.
    """

    index: int
    chain: Chain
    labels: list[int | None]
    prefix: list[int]
    shortcut_steps: list[int]
    t_inf: list[int]
    core: list[int]
    influence: Float[Tensor, "step step"] | None
    threshold: float | None
    scores: dict[str, float]

    @property
    def prefix_len(self) -> int:
        return len(self.prefix)


@dataclass
class StepLabels:
    """Labels of every chain that passed the filters, the config, ``filter_counts`` (chains left after each
    filter, as the paper's Table 4: ``total``, then each of :data:`STAGES`) and ``dropped`` (``(index, reason)``
    of each chain that did not pass)."""

    chains: list[ChainLabels]
    config: LabelConfig
    filter_counts: dict[str, int]
    dropped: list[tuple[int, str]] = field(default_factory=list)

    def _require_chains(self) -> None:
        if not self.chains:
            raise ReasonlensError(f"no chain passed the filters ({self.filter_counts}); label more chains, or use a "
                                  "model that answers them correctly with and only with its chain")

    def core_size(self) -> float:
        """Mean of ``|T*| / |prefix|`` over the labelled chains (the paper's Table 1, as a fraction)."""
        self._require_chains()
        return sum(len(c.core) / c.prefix_len for c in self.chains) / len(self.chains)

    def records(self) -> list[dict[str, Any]]:
        """One dict per labelled step: ``chain`` (its chain's ``index``), ``step``, ``text``, ``label``,
        ``role``, ``position`` (``step / len(chain)``) and ``n_tokens``."""
        return [{"chain": c.index, "step": i, "text": c.chain.steps[i], "label": label, "role": c.chain.roles[i],
                 "position": i / len(c.chain), "n_tokens": len(c.chain.step_ids[i])}
                for c in self.chains for i, label in enumerate(c.labels) if label is not None]

    def agreement_with_ground_truth(self) -> dict[str, Any]:
        """Label 1 (removable) against the generator's ``"redundant"`` role.

        Over the prefix steps that are labelled or redundant (so unlabelled redundant steps count as missed,
        and steps outside the prefixes are left out): ``precision`` = redundant among the removable,
        ``recall`` = removable among the redundant (NaN when there are none), each with its 95% Wilson interval
        (``precision_ci95``, ``recall_ci95``), ``n_removable``, ``n_redundant`` and ``n_both``; and where every
        redundant step of the labelled chains ended (``redundant_fate``: a ``shortcut``, ``after_prefix``,
        ``removable`` in stage 1, ``stage2_removed`` or in the ``core``).
        """
        self._require_chains()
        both = removable = redundant = 0
        for c in self.chains:
            for i in c.prefix:
                is_removable, is_redundant = c.labels[i] == 1, c.chain.roles[i] == "redundant"
                removable += is_removable
                redundant += is_redundant
                both += is_removable and is_redundant
        from reasonlens.stats import wilson_interval

        fate = dict.fromkeys(("shortcut", "after_prefix", "removable", "stage2_removed", "core"), 0)
        for c in self.chains:
            for i, role in enumerate(c.chain.roles):
                if role == "redundant":
                    fate["shortcut" if i in c.shortcut_steps else "after_prefix" if i not in c.prefix else
                         "removable" if i not in c.t_inf else "stage2_removed" if i not in c.core else "core"] += 1
        return {"redundant_fate": fate, "precision": both / removable if removable else math.nan,
                "precision_ci95": wilson_interval(both, removable).tolist(),
                "recall": both / redundant if redundant else math.nan,
                "recall_ci95": wilson_interval(both, redundant).tolist(),
                "n_removable": removable, "n_redundant": redundant, "n_both": both}

    def influence_by_role(self) -> dict[str, dict[str, float]]:
        """Per generator role (prefix steps of chains with an influence matrix): ``mean_influence``, the mean over
        steps of their mean nonzero influence on later steps (stage 2's ranking key), ``answer_share``, their mean
        share of the answer step's influence (what stage 1 starts from), and ``n`` steps."""
        rows: dict[str, list[tuple[float, float]]] = {}
        for c in self.chains:
            if c.influence is None:
                continue
            n, infl = c.prefix_len, c.influence
            answer_total = float(infl[n, :n].sum())
            for p, s in enumerate(c.prefix):
                column = infl[:, p]
                mean = float(column.sum() / max(int(column.count_nonzero()), 1))
                share = float(infl[n, p]) / answer_total if answer_total > 0 else math.nan
                rows.setdefault(str(c.chain.roles[s]), []).append((mean, share))
        return {role: {"mean_influence": sum(m for m, _ in v) / len(v), "answer_share": sum(a for _, a in v) / len(v),
                       "n": len(v)} for role, v in sorted(rows.items())}

    def score_summary(self) -> dict[str, Any]:
        """Over the labelled chains: the quantiles of each recorded score (``full_sufficiency``,
        ``empty_sufficiency``, ``prefix_attainability``, ``core_sufficiency``, ...) under ``quantiles``; how many
        subsets the search decided on (prefixes, stage-1 masks, stage-2 removals), how many of them were
        ``rejected_by_sufficiency`` and how many ``rejected_by_attainability_only`` (sufficient, not attainable);
        and ``vacuous``, the checks that rejected nothing (they decided no label)."""
        from reasonlens.stats import quantiles

        counts = ("subsets_decided", "rejected_by_sufficiency", "rejected_by_attainability_only")
        names = sorted({k for c in self.chains for k in c.scores} - set(counts))
        totals = {k: int(sum(c.scores.get(k, 0) for c in self.chains)) for k in counts}
        vacuous = [check for check, key in (("sufficiency", "rejected_by_sufficiency"),
                                            ("attainability", "rejected_by_attainability_only")) if totals[key] == 0]
        return {"quantiles": {name: quantiles([c.scores[name] for c in self.chains if name in c.scores])
                              for name in names}, **totals, "vacuous": vacuous}

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/labels.json`` (config, counts, chains, labels, scores) and ``folder/influence.pt``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [{"index": c.index, "chain": c.chain.to_dict(), "labels": c.labels, "prefix": c.prefix,
                 "shortcut_steps": c.shortcut_steps, "t_inf": c.t_inf, "core": c.core, "threshold": c.threshold,
                 "scores": c.scores} for c in self.chains]
        (folder / LABELS_FILE).write_text(json.dumps(
            {"config": self.config.to_dict(), "filter_counts": self.filter_counts,
             "dropped": [list(d) for d in self.dropped], "chains": rows}))
        torch.save({str(c.index): c.influence for c in self.chains if c.influence is not None},
                   folder / TENSORS_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> StepLabels:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / LABELS_FILE).is_file():
            raise ReasonlensError(f"{folder} has no {LABELS_FILE}; pass a folder written by StepLabels.save")
        data = load_saved(folder / LABELS_FILE, "StepLabels", ("chains", "config", "filter_counts", "dropped"),
                          fmt="json")
        tensors = load_saved(folder / TENSORS_FILE, "StepLabels")
        chains = [ChainLabels(index=r["index"], chain=Chain.from_dict(r["chain"]), labels=r["labels"],
                              prefix=r["prefix"], shortcut_steps=r["shortcut_steps"], t_inf=r["t_inf"], core=r["core"],
                              influence=tensors.get(str(r["index"])), threshold=r["threshold"], scores=r["scores"])
                  for r in data["chains"]]
        return cls(chains=chains, config=LabelConfig.from_dict(data["config"]), filter_counts=data["filter_counts"],
                   dropped=[(int(i), str(reason)) for i, reason in data["dropped"]])


def influence_kept(infl: Float[Tensor, "step step"], threshold: float) -> list[int]:
    """Stage 1 (Function 1) at one threshold: the positions kept from the last one backwards (each kept step
    keeps every predecessor whose influence on it is at least the value where the descending normalised
    cumulative sum reaches ``threshold``; a step whose predecessors all have zero influence keeps them all).

    >>> infl = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [3, 1, 0, 0], [1, 1, 8, 0]])
    >>> influence_kept(infl, 0.5), influence_kept(infl, 0.95)
    ([0, 2, 3], [0, 1, 2, 3])
    """
    n = infl.shape[0]
    kept = {n - 1}
    for k in range(n - 1, 0, -1):
        if k not in kept:
            continue
        values = infl[k, :k]
        total = values.sum()
        if total <= 0:
            kept.update(range(k))
            continue
        ordered = values.sort(descending=True).values
        reach = int(torch.searchsorted(ordered.cumsum(0) / total, torch.tensor(threshold, dtype=ordered.dtype)))
        cutoff = ordered[min(reach, k - 1)]
        kept.update(j for j in range(k) if values[j] >= cutoff)
    return sorted(kept)


def _states_label(step: str, label: bool) -> bool:
    return re.search(rf"(?<!\w){'true' if label else 'false'}(?!\w)", step, re.IGNORECASE) is not None


_ANSWER_STATEMENT = re.compile(r"^\s*(thus|therefore|so|hence|consequently|this means|my|the)\b.*\b(answer|result)\b"
                               r"\s*(is|was|=|:)\s*\S", re.IGNORECASE)


def is_shortcut_text(step: str, label: bool) -> bool:
    """Whether a step's text gives the answer away: it states the gold label word, or it is a direct answer
    statement (the paper's list of openings, then "answer" or "result" with a value).

    >>> is_shortcut_text("So the answer is 12.", True), is_shortcut_text("Max is not alive.", True)
    (True, False)
    """
    return _states_label(step, label) or _ANSWER_STATEMENT.search(step) is not None


def with_answer_step(chain: Chain, suffix_ids: Sequence[int], suffix: str) -> Chain:
    """``chain`` with the answer step ``σ ∘ a*`` (the suffix, then the gold answer token) appended as its last
    step (role ``"answer"``): stage 1's starting point."""
    word = "true" if chain.label else "false"
    return Chain(example=chain.example, prompt_ids=chain.prompt_ids,
                 step_ids=[*chain.step_ids, [*suffix_ids, chain.gold_answer_id]],
                 steps=[*chain.steps, f"{suffix.strip()} {word}"], roles=[*chain.roles, "answer"],
                 answer_ids=chain.answer_ids, source=chain.source, meta=chain.meta)


class _Search:
    """The filters and both stages for one chain, every subset scored through one memoising scorer."""

    def __init__(self, model: TransformerBridge, chain: Chain, config: LabelConfig,
                 scorer: SubsetScorer | None = None) -> None:
        self.model, self.chain, self.config = model, chain, config
        self.scorer = scorer if scorer is not None else SubsetScorer(model, chain, config.scoring)
        self.scores: dict[str, float] = {}
        self.decided: dict[tuple[int, ...], tuple[bool, bool]] = {}  # subset -> (sufficient, attainable)

    def passes(self, keeps: Sequence[Sequence[int]]) -> list[bool]:
        tau = self.config.scoring.tau
        suff, attn = self.scorer.scores(keeps)
        for keep, a, b in zip(keeps, suff.tolist(), attn.tolist()):
            self.decided[tuple(sorted(keep))] = (a >= tau, b >= tau)
        return [s >= tau and (not self.config.use_attainability or a >= tau)
                for s, a in zip(suff.tolist(), attn.tolist())]

    def record(self, name: str, keep: Sequence[int]) -> None:
        suff, attn = self.scorer.scores([keep])
        self.scores[f"{name}_sufficiency"], self.scores[f"{name}_attainability"] = float(suff[0]), float(attn[0])

    def filters(self) -> tuple[str | None, list[int], list[int]]:
        """``(the first stage failed, or None, shortcut steps, prefix)``."""
        chain, tau = self.chain, self.config.scoring.tau
        n = len(chain)
        if chain.source == "greedy" and chain.meta.get("answer") != ("True" if chain.label else "False"):
            return "correct", [], []
        suff, _ = self.scorer.scores([range(n), [], *([i] for i in range(n))])
        self.scores.update(full_sufficiency=float(suff[0]), empty_sufficiency=float(suff[1]))
        if suff[0] < tau:
            return "sufficient", [], []
        if not needs_chain(float(suff[1]), self.config.scoring):  # this config's rule (the scorer may be shared)
            return "necessary", [], []
        alone = self.config.shortcut_alone
        shortcuts = [i for i in range(n)
                     if (alone and suff[2 + i] >= tau) or is_shortcut_text(chain.steps[i], chain.label)]
        rest = [i for i in range(n) if i not in shortcuts]
        if not rest:
            return "sufficient_after_shortcuts", shortcuts, []
        rest_suff = float(self.scorer.scores([rest])[0][0])
        self.scores["after_shortcuts_sufficiency"] = rest_suff
        if rest_suff < tau:
            return "sufficient_after_shortcuts", shortcuts, []
        prefixes = [rest[:p] for p in range(1, len(rest) + 1)]
        ok = self.passes(prefixes)
        if not any(ok):
            return "prefix", shortcuts, []
        prefix = prefixes[ok.index(True)]
        self.record("prefix", prefix)
        low, high = self.config.prefix_steps
        if not low <= len(prefix) <= high:
            return "prefix_length", shortcuts, prefix
        return None, shortcuts, prefix

    def influence(self, prefix: list[int]) -> Tensor:
        """The influence matrix over the prefix steps and the answer step (last row and column)."""
        cfg = self.config
        extended = with_answer_step(self.chain, self.scorer.suffix_ids, cfg.scoring.suffix)
        return influence_matrix(self.model, extended, [*prefix, len(self.chain)], method=cfg.influence,
                                ig_steps=cfg.ig_steps, batch_size=cfg.batch_size)

    def stage1(self, prefix: list[int], infl: Tensor) -> tuple[list[int], float | None]:
        masks = [[prefix[p] for p in influence_kept(infl, t) if p < len(prefix)] for t in self.config.thresholds]
        ok = self.passes(masks)
        if not any(ok):
            return prefix, None
        return masks[ok.index(True)], self.config.thresholds[ok.index(True)]

    def stage2(self, t_inf: list[int], queue: list[int]) -> list[int]:
        """Function 2, each round scoring every queued removal at once (the first that passes, in queue order,
        is the one a one-at-a-time search would take)."""
        current = list(t_inf)
        while queue:
            ok = self.passes([[s for s in current if s != step] for step in queue])
            if not any(ok):
                break
            m = ok.index(True)
            current.remove(queue[m])
            queue = queue[m + 1:] + queue[:m]
        return current

    def ranking(self, t_inf: list[int], prefix: list[int], infl: Tensor | None) -> list[int]:
        """The stage-2 queue: ``t_inf`` but the last prefix step, by ascending mean influence on later steps
        (random for the random ranking)."""
        candidates = [s for s in t_inf if s != prefix[-1]]
        if self.config.ranking == "oracle":  # the generator's redundant steps first, each group in chain order
            return sorted(candidates, key=lambda s: self.chain.roles[s] != "redundant")
        if infl is None:
            gen = torch.Generator().manual_seed(stable_seed("ranking", self.config.seed, self.chain.prompt_ids,
                                                            self.chain.step_ids))
            return [candidates[i] for i in torch.randperm(len(candidates), generator=gen).tolist()]
        column = {s: infl[:, p] for p, s in enumerate(prefix)}
        means = {s: float(column[s].sum() / max(int(column[s].count_nonzero()), 1)) for s in candidates}
        return sorted(candidates, key=lambda s: means[s])

    def run(self, index: int) -> ChainLabels | str:
        reason, shortcuts, prefix = self.filters()
        if reason is not None:
            return reason
        cfg = self.config
        infl, threshold, t_inf = None, None, prefix
        if cfg.ranking == "influence":
            infl = self.influence(prefix)
            t_inf, threshold = self.stage1(prefix, infl)
        elif cfg.ranking == "oracle":
            if not any(role is not None for role in self.chain.roles):
                raise ReasonlensError("the oracle ranking reads the generator's role tags, and this chain has none; "
                                      "use gold chains (chains_from_examples(..., source='gold'))")
            proof = [s for s in prefix if self.chain.roles[s] != "redundant" or s == prefix[-1]]
            if self.passes([proof])[0]:
                t_inf = proof
        self.record("t_inf", t_inf)
        core = self.stage2(t_inf, self.ranking(t_inf, prefix, infl))
        self.record("core", core)
        self.scores.update(subsets_decided=len(self.decided),
                           rejected_by_sufficiency=sum(not s for s, _ in self.decided.values()),
                           rejected_by_attainability_only=sum(s and not a for s, a in self.decided.values()))
        if cfg.require_stage2_removal and len(core) == len(t_inf):
            return "labelled"
        labels: list[int | None] = [None] * len(self.chain)
        for i in prefix:
            labels[i] = 0 if i in core else None if i in t_inf else 1
        return ChainLabels(index=index, chain=self.chain, labels=labels, prefix=prefix, shortcut_steps=shortcuts,
                           t_inf=t_inf, core=core, influence=infl, threshold=threshold, scores=dict(self.scores))


STAGES: tuple[str, ...] = ("correct", "sufficient", "necessary", "sufficient_after_shortcuts", "prefix", "prefix_length",
                           "labelled")
_DROP_REASONS = {"correct": "the model's own answer at the end of its chain is wrong",
                 "sufficient": "the full chain is not sufficient",
                 "necessary": "not necessary: more than necessity_max_correct answers without the chain are right",
                 "sufficient_after_shortcuts": "not sufficient after shortcut removal",
                 "prefix": "no prefix is both sufficient and attainable",
                 "prefix_length": "the sufficient prefix's length is outside prefix_steps",
                 "labelled": "stage 2 removed nothing (the paper's label extraction drops such chains)"}


def label_steps(model: TransformerBridge, chains: Sequence[Chain], config: LabelConfig = LabelConfig(), *,
                progress: bool = False, scorer_cache: dict[Any, SubsetScorer] | None = None) -> StepLabels:
    """Label the steps of ``chains`` by removability (see the module docstring for the pipeline).

    ``scorer_cache``: a dict shared by several calls on the same chains (e.g. the influence and the random
    ranking) keeps every subset's scores, so a subset scored once is not run again; calls whose scoring differs
    only in ``necessity_max_correct`` share them too. Chains with one step cannot be pruned and are dropped
    (reason ``"one step"``); a :class:`ReasonlensError` when ``chains`` is empty or every chain has one step.
    """
    from tqdm.auto import tqdm

    if not chains:
        raise ReasonlensError("no chains: pass at least one Chain (reasonlens.importance.chains.chains_from_examples)")
    if not isinstance(config, LabelConfig):
        raise ReasonlensError(f"config must be a LabelConfig, got {type(config).__name__}")
    for chain in chains:
        if not isinstance(chain, Chain):
            raise ReasonlensError(f"chains must hold Chain objects, got a {type(chain).__name__}; build them with "
                                  "reasonlens.importance.chains.chains_from_examples")
        chain.check(model)
    if all(len(c) < 2 for c in chains):
        raise ReasonlensError("every chain has a single step, and a one-step chain has nothing to prune; pass "
                              "chains of two or more steps")
    counts = {"total": len(chains), **{s: 0 for s in STAGES}}
    done, dropped = [], []
    for index, chain in enumerate(tqdm(chains, desc="label steps", unit="chain", disable=not progress)):
        if len(chain) < 2:
            dropped.append((index, "one step"))
            continue
        scorer = None
        if scorer_cache is not None:
            key = (id(model), id(chain), replace(config.scoring, necessity_max_correct=0))
            if key not in scorer_cache:
                scorer_cache[key] = SubsetScorer(model, chain, config.scoring)
            scorer = scorer_cache[key]
        result = _Search(model, chain, config, scorer).run(index)
        if scorer is not None:
            scorer.release()  # keep the scores, not the prompt's keys and values
        passed = STAGES if isinstance(result, ChainLabels) else STAGES[:STAGES.index(result)]
        for stage in passed:
            counts[stage] += 1
        if isinstance(result, ChainLabels):
            done.append(result)
        else:
            dropped.append((index, _DROP_REASONS[result]))
    return StepLabels(chains=done, config=config, filter_counts=counts, dropped=dropped)
