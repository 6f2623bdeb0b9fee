"""Relation probes on token pairs: in which layer do ontology relations become decodable? (Dutta et al. 2024,
TMLR: early layers move information along ontological relations.)

The model reads each question alone (0-shot prompt, no chain of thought). A pair is two word positions of the
context (the first token of each word) and its class is the relation the context states between the two words:

- ``related``: subject and object of one affirmative sentence ("Wumpuses are yumpuses.", "Every wumpus is
  wooden.", "Polly is a wumpus.");
- ``negated``: subject and property of one negated sentence ("Every wumpus is not cold.");
- ``unrelated``: two ontology words of different sentences with no chain of context statements from one to the
  other ("wumpus" and "cold" when no "wumpus is ... is cold" path exists; two properties of different concepts).

The dataset keeps as many pairs of each class (a random subset of the larger classes). Features at layer ``k``
are ``[h_i ; h_j]``, the residual streams at the two positions: layer 0 is the embedding
(``blocks.0.hook_resid_pre``), layer ``k`` the output of block ``k - 1`` (labelled ``L{k-1}``). Per layer, a
linear probe (logistic regression) and an MLP (hidden 128-64-32, as in the paper) are trained on the pairs of
80% of the questions and scored on the other 20% (a stratified split by question, so no prompt is on both
sides), once per seed. As in the paper, the classes differ in more than the relation: related and negated
pairs sit in one sentence and unrelated ones do not (word distance), and negated pairs always join a concept
and a property while related ones also join two concepts or the entity and its concept (word types), so even
the embedding layer scores above chance. The per-class recalls show what later layers add: ``recall_related``
rises once affirmative property rules are told apart from negated ones, which takes the "not" between them.

>>> from reasonlens.ontology import generate
>>> from reasonlens.tokenizer import build_reference_tokenizer
>>> data = relation_dataset(build_reference_tokenizer(), generate(20, kind="fictional", seed=0))
>>> len(set(data.class_counts().values()))  # balanced
1
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, no_type_check

import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.model import require_tokenizer
from reasonlens.ontology.lexicon import plural
from reasonlens.ontology.prompt import format_prompt
from reasonlens.ontology.types import Example
from reasonlens.results import ConfigDict, LabelledTensor
from reasonlens.runtime import collect_activations
from reasonlens.spans import char_to_token_spans
from reasonlens.validation import check_finite, check_float, check_int, check_int_list, check_tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

RELATION_CLASSES: tuple[str, ...] = ("related", "negated", "unrelated")
PROBE_KINDS: tuple[str, ...] = ("linear", "mlp")
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "macro_f1")
_WORD = re.compile(r"[A-Za-z]+")
_QUANTIFIERS = frozenset({"every", "each"})


@dataclass(frozen=True)
class RelationPair:
    """Two word positions of example ``example_index``'s prompt (``first < second``) and their relation."""

    example_index: int
    first: int
    second: int
    first_word: str
    second_word: str
    relation: str


@dataclass
class RelationDataset:
    """The prompts (``token_ids[i]`` of example ``i``) and the labelled pairs of positions in them."""

    token_ids: list[tuple[int, ...]]
    pairs: list[RelationPair]

    def class_counts(self) -> dict[str, int]:
        return {c: sum(p.relation == c for p in self.pairs) for c in RELATION_CLASSES}


@dataclass(frozen=True)
class _Word:
    sentence: int
    node: str  # the concept, property or entity the word names
    start: int  # characters of the word in the prompt
    end: int


def _names(word: str, node: str) -> bool:
    return word.lower() in (node.lower(), plural(node).lower())


def _sentence_words(example: Example, text: str) -> list[tuple[_Word, _Word, bool]]:
    """(subject, object, negated) of every context sentence whose words name its fact's subject and predicate."""
    out, cursor = [], 0
    for k, s in enumerate(example.context):
        start = text.index(s.text, cursor)
        cursor = start + len(s.text)
        words = list(_WORD.finditer(s.text))
        subject = words[1] if words[0].group().lower() in _QUANTIFIERS else words[0]
        obj = words[-1]
        if _names(subject.group(), s.fact.subject) and _names(obj.group(), s.fact.predicate):
            out.append((_Word(k, s.fact.subject, start + subject.start(), start + subject.end()),
                        _Word(k, s.fact.predicate, start + obj.start(), start + obj.end()), s.fact.negated))
    return out


def _reachable(edges: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Every node's descendants along the directed edges."""
    children: dict[str, set[str]] = {}
    for a, b in edges:
        children.setdefault(a, set()).add(b)
    reach: dict[str, set[str]] = {}
    for node in {n for e in edges for n in e}:
        seen, stack = set(), [node]
        while stack:
            for nxt in children.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        reach[node] = seen
    return reach


def _example_pairs(tokenizer: PreTrainedTokenizerBase, index: int,
                   example: Example) -> tuple[tuple[int, ...], list[RelationPair]]:
    text = format_prompt(example)
    triples = _sentence_words(example, text)
    words = sorted({w for subj, obj, _ in triples for w in (subj, obj)}, key=lambda w: w.start)
    spans = char_to_token_spans(tokenizer, text, [(w.start, w.end) for w in words])
    position = {w: span.start for w, span in zip(words, spans)}
    reach = _reachable([(subj.node, obj.node) for subj, obj, _ in triples])

    def pair(a: _Word, b: _Word, relation: str) -> RelationPair:
        return RelationPair(index, position[a], position[b], text[a.start:a.end], text[b.start:b.end], relation)

    pairs = [pair(subj, obj, "negated" if negated else "related") for subj, obj, negated in triples]
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            if a.sentence != b.sentence and a.node != b.node and b.node not in reach[a.node] \
                    and a.node not in reach[b.node]:
                pairs.append(pair(a, b, "unrelated"))
    return tuple(tokenizer(text)["input_ids"]), pairs


def relation_dataset(tokenizer: PreTrainedTokenizerBase | None, examples: Sequence[Example], *, balance: bool = True,
                     seed: int = 0) -> RelationDataset:
    """The relation pairs of ``examples`` (their 0-shot prompts); ``balance`` keeps a random subset (``seed``)
    of each class as large as the smallest class."""
    if tokenizer is None:
        raise ReasonlensError("no tokenizer: pass model.tokenizer (load the model from a folder with a "
                              "tokenizer.json)")
    if not examples:
        raise ReasonlensError("no examples given; pass generated questions, e.g. generate(200, kind='fictional')")
    token_ids, pairs = [], []
    for i, ex in enumerate(examples):
        ids, found = _example_pairs(tokenizer, i, ex)
        token_ids.append(ids)
        pairs += found
    if balance:
        by_class = [[p for p in pairs if p.relation == c] for c in RELATION_CLASSES]
        n = min(len(ps) for ps in by_class)
        rng = random.Random(seed)
        keep = {p for ps in by_class for p in rng.sample(ps, n)}
        pairs = [p for p in pairs if p in keep]
    return RelationDataset(token_ids, pairs)


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class RelationProbeConfig(ConfigDict):
    """Probe hyperparameters: ``hidden_sizes`` of the MLP (the paper's 128-64-32), its L2 penalty
    ``mlp_alpha``, the inverse L2 strength ``linear_c`` of the logistic regression, and the most optimiser
    iterations ``max_iter`` (the MLP stops early on a 10% validation split of its training pairs)."""

    hidden_sizes: tuple[int, ...] = (128, 64, 32)
    mlp_alpha: float = 1e-4
    linear_c: float = 1.0
    max_iter: int = 300

    def __post_init__(self) -> None:
        sizes = check_int_list(self.hidden_sizes, "hidden_sizes", low=1, unique=False, example="(128, 64, 32)")
        object.__setattr__(self, "hidden_sizes", tuple(sizes))
        check_float(self.mlp_alpha, "mlp_alpha", low=0)
        check_float(self.linear_c, "linear_c", low=0, low_open=True)
        check_int(self.max_iter, "max_iter", low=1)


def _probe(kind: str, config: RelationProbeConfig, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(C=config.linear_c, max_iter=config.max_iter))
    return make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=config.hidden_sizes, alpha=config.mlp_alpha, max_iter=config.max_iter,
        early_stopping=True, random_state=seed))


def _split(labels: Int[Tensor, " pair"], groups: Int[Tensor, " pair"], test_fraction: float,
           seed: int) -> tuple[Tensor, Tensor]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / test_fraction))
    if len(set(groups.tolist())) < n_splits:
        raise ReasonlensError(f"{len(set(groups.tolist()))} examples are too few to hold out {test_fraction:.0%} of "
                              f"them; pass at least {n_splits} (hundreds for stable accuracies)")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, test = next(iter(splitter.split(labels.numpy(), labels.numpy(), groups.numpy())))
    for name, idx in (("training", train), ("test", test)):
        missing = set(labels.tolist()) - set(labels[idx].tolist())
        if missing:
            raise ReasonlensError(f"the {name} split of seed {seed} has no pair of class(es) {sorted(missing)}; "
                                  "pass more examples")
    return torch.as_tensor(train), torch.as_tensor(test)


def probe_scores(features: Float[Tensor, "layer pair feature"], labels: Int[Tensor, " pair"],
                 groups: Int[Tensor, " pair"], *, probes: Sequence[str] = PROBE_KINDS, seeds: Sequence[int] = (0, 1, 2),
                 test_fraction: float = 0.2, config: RelationProbeConfig = RelationProbeConfig(),
                 layer_labels: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                 progress: bool = False) -> LabelledTensor:
    """Held-out scores of probes trained per layer: values ``[metric, seed, probe, layer]``, with metrics
    ``accuracy``, ``macro_f1`` and the recall of each class (``recall_{name}``, classes ``0, 1, ...`` named by
    ``class_names``).

    Pairs sharing a ``groups`` id (their question) stay on one side of each seed's split
    (``StratifiedGroupKFold`` with ``round(1 / test_fraction)`` folds; its first fold is the test set).
    ``meta["chance"]`` is the mean share of the most common class in the test sets.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score, recall_score
    from tqdm.auto import tqdm

    if isinstance(probes, str):
        probes = [probes]
    unknown = [p for p in probes if p not in PROBE_KINDS]
    if unknown or not probes:
        raise ReasonlensError(f"unknown probe kind(s) {unknown or list(probes)}; choose from {PROBE_KINDS}")
    if isinstance(seeds, (list, tuple, range)) and len(seeds) == 0:
        raise ReasonlensError("no seeds given; pass at least one, e.g. seeds=(0,)")
    seeds = check_int_list(seeds, "seeds", example="(0, 1, 2)")
    check_float(test_fraction, "test_fraction", low=0, high=1, low_open=True, high_open=True)
    if not isinstance(config, RelationProbeConfig):
        raise ReasonlensError(f"config must be a reasonlens.patching.relations.RelationProbeConfig, got {type(config).__name__}")
    check_tensor(features, "features", kind="float", ndim=3, what="[layer, pair, feature]")
    check_finite(features, "features", hint="a probe cannot be fit on them; drop or recompute those pairs")
    check_tensor(labels, "labels", kind="int", ndim=1, what="[pair]")
    check_tensor(groups, "groups", ndim=1, what="[pair]")
    if int(labels.min()) < 0:
        raise ReasonlensError(f"labels must be class indices 0, 1, ..., got {int(labels.min())}")
    if not features.shape[1] == len(labels) == len(groups):
        raise ReasonlensError(f"{features.shape[1]} feature rows, {len(labels)} labels and {len(groups)} groups; "
                              "pass one of each per pair")
    if len(set(labels.tolist())) < 2:
        raise ReasonlensError(f"all {len(labels)} pairs have one class; a probe needs at least two")
    n_classes = int(labels.max()) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ReasonlensError(f"{len(names)} class names for {n_classes} classes; pass one name per class")
    metrics = [*SUMMARY_METRICS, *(f"recall_{name}" for name in names)]
    n_layers = features.shape[0]
    scores = torch.zeros((len(metrics), len(seeds), len(probes), n_layers))
    chance = []
    bar = tqdm(total=len(seeds) * len(probes) * n_layers, desc="probes", unit="probe", disable=not progress)
    for s, seed in enumerate(seeds):
        train, test = _split(labels, groups, test_fraction, seed)
        chance.append(labels[test].bincount().max().item() / len(test))
        for p, kind in enumerate(probes):
            for layer in range(n_layers):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    probe = _probe(kind, config, seed).fit(features[layer, train].numpy(), labels[train].numpy())
                predicted = probe.predict(features[layer, test].numpy())
                truth = labels[test].numpy()
                scores[0, s, p, layer] = accuracy_score(truth, predicted)
                scores[1, s, p, layer] = f1_score(truth, predicted, average="macro")
                scores[2:, s, p, layer] = torch.as_tensor(
                    recall_score(truth, predicted, labels=range(n_classes), average=None, zero_division=0))
                bar.update()
    bar.close()
    layers = list(layer_labels) if layer_labels is not None else [str(l) for l in range(n_layers)]
    return LabelledTensor(scores, axes=("metric", "seed", "probe", "layer"),
                          labels={"metric": metrics, "seed": [str(s) for s in seeds], "probe": list(probes),
                                  "layer": layers},
                          meta={"chance": sum(chance) / len(chance), "test_fraction": test_fraction})


@dataclass
class RelationProbeResult:
    """Probe scores with axes ``("metric", "seed", "probe", "layer")`` (metrics ``accuracy``, ``macro_f1`` and
    ``recall_related`` / ``recall_negated`` / ``recall_unrelated``); ``meta`` holds the chance level, the class
    counts and the number of examples."""

    scores: LabelledTensor

    @property
    def probes(self) -> list[str]:
        return self.scores.axis_labels("probe")

    @property
    def layer_labels(self) -> list[str]:
        return self.scores.axis_labels("layer")

    @property
    def chance(self) -> float:
        """Share of the most common class in the test sets (1/3 for balanced classes)."""
        return float(self.scores.meta["chance"])

    @property
    def metrics(self) -> list[str]:
        return self.scores.axis_labels("metric")

    def _metric(self, metric: str) -> Float[Tensor, "seed probe layer"]:
        if metric not in self.metrics:
            raise ReasonlensError(f"unknown metric {metric!r}; choose from {self.metrics}")
        return self.scores.values[self.metrics.index(metric)]

    def mean(self, metric: str = "accuracy") -> Float[Tensor, "probe layer"]:
        """Mean over seeds."""
        return self._metric(metric).mean(0)

    def std(self, metric: str = "accuracy") -> Float[Tensor, "probe layer"]:
        """Standard deviation over seeds (zero with one seed)."""
        values = self._metric(metric)
        return values.std(0) if values.shape[0] > 1 else torch.zeros_like(values[0])

    def best_layer(self, probe: str = "mlp", metric: str = "accuracy") -> str:
        """Label of the layer where ``probe`` scores best on average."""
        if probe not in self.probes:
            raise ReasonlensError(f"no {probe!r} probe in this result; it has {self.probes}")
        return self.layer_labels[int(self.mean(metric)[self.probes.index(probe)].argmax())]

    def to_dataframe(self):
        """One row per probe and layer: mean and standard deviation over seeds of each metric."""
        import pandas as pd

        rows = []
        for p, probe in enumerate(self.probes):
            for l, layer in enumerate(self.layer_labels):
                row = {"probe": probe, "layer": layer}
                for metric in self.metrics:
                    row[metric] = float(self.mean(metric)[p, l])
                    row[f"{metric}_std"] = float(self.std(metric)[p, l])
                rows.append(row)
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.pt`` file)."""
        return self.scores.save(path)

    @classmethod
    def load(cls, path: str | Path) -> RelationProbeResult:
        """Read a file written by :meth:`save`."""
        return cls(LabelledTensor.load(path))


def residual_layer_hooks(model: TransformerBridge, layers: Sequence[int] | None = None) -> tuple[list[str], list[str]]:
    """Hook names and labels of residual-stream layers ``0..n_layers``: 0 is the embedding
    (``blocks.0.hook_resid_pre``, label ``embed``), ``k`` the output of block ``k - 1`` (label ``L{k-1}``)."""
    n = model.cfg.n_layers
    layers = list(range(n + 1)) if layers is None else check_int_list(layers, "layers", example="[0, 2]")
    bad = [l for l in layers if not 0 <= l <= n]
    if bad:
        raise ReasonlensError(f"layers {bad or layers} are not residual layers of this model; use 0 (embedding) to "
                              f"{n} (output of the last block)")
    names = ["blocks.0.hook_resid_pre" if l == 0 else f"blocks.{l - 1}.hook_resid_post" for l in layers]
    return names, ["embed" if l == 0 else f"L{l - 1}" for l in layers]


def relation_probes(model: TransformerBridge, examples: Sequence[Example], *, layers: Sequence[int] | None = None,
                    probes: Sequence[str] = PROBE_KINDS, seeds: Sequence[int] = (0, 1, 2), test_fraction: float = 0.2,
                    config: RelationProbeConfig = RelationProbeConfig(), batch_size: int = 32,
                    progress: bool = False) -> RelationProbeResult:
    """Train relation probes on ``[h_i ; h_j]`` of the pairs of :func:`relation_dataset` at each residual layer
    (``layers`` in ``0..n_layers``, default all; see the module doc) and score them on held-out questions."""
    names, labels = residual_layer_hooks(model, layers)
    data = relation_dataset(require_tokenizer(model), examples)
    if not data.pairs:
        raise ReasonlensError(f"the {len(examples)} examples give no pair of some relation class; pass more "
                              "examples (with negated rules, e.g. generate(200, kind='fictional'))")
    positions = [sorted({q for p in data.pairs if p.example_index == i for q in (p.first, p.second)})
                 for i in range(len(examples))]
    acts = collect_activations(model, data.token_ids, positions, names, batch_size=batch_size, progress=progress)
    index = [{q: k for k, q in enumerate(pos)} for pos in positions]
    features = torch.stack([
        torch.cat([acts[p.example_index][:, index[p.example_index][p.first]],
                   acts[p.example_index][:, index[p.example_index][p.second]]], dim=-1)
        for p in data.pairs], dim=1).float()  # [layer, pair, 2 * d_model]
    targets = torch.tensor([RELATION_CLASSES.index(p.relation) for p in data.pairs])
    groups = torch.tensor([p.example_index for p in data.pairs])
    scores = probe_scores(features, targets, groups, probes=probes, seeds=seeds, test_fraction=test_fraction,
                          config=config, layer_labels=labels, class_names=RELATION_CLASSES, progress=progress)
    scores.meta.update(class_counts=data.class_counts(), n_examples=len(examples), model=model.cfg.model_name)
    return RelationProbeResult(scores)
