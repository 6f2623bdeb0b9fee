"""Step-importance probes: classifiers that read a step's activations and say whether it is removable
(label 1) or important (label 0), as in the step-importance paper (Nikankin et al., 2026, section 2.3).

Architectures: ``linear`` (d -> 1) and ``mlp`` (d -> hidden -> ReLU -> 1) read the layer-averaged vector;
``lw_linear`` (L·d -> 1) and ``lw_mlp`` (L·d -> hidden -> ReLU -> 1, the paper's default) read all layers
side by side. Two-dimensional features ``[step, feature]`` (one layer, surface features) are read as they are.

Protocol, once per seed. The split is by step (default) or by group (``groups``: one integer per step, e.g.
the index of its chain of thought, so that no chain has steps on both sides; on templated text the steps of
one chain look alike, and a step split lets a probe recognise the chain instead of the step):

- by step, the larger class is subsampled to the size of the smaller one and the kept steps are split 80/20
  (stratified), so both sides are balanced;
- by group, the first fold of a shuffled ``StratifiedGroupKFold`` (``round(1 / test_fraction)`` folds) is the
  test side, kept whole, and the larger class of the training side is subsampled; the validation slice below
  is grouped the same way.

Inputs are standardised with training-split statistics, and the probe is trained with BCE-with-logits
(``pos_weight = n_neg / n_pos``), AdamW and a cosine schedule over the epochs. Accuracies are balanced (the mean
of the two classes' recall, :func:`balanced_accuracy`; the plain accuracy on a test side with as many steps of
each class). Two are reported:

- ``best_epoch_accuracy``: the paper's number, the best test accuracy over epochs of a probe trained on the
  whole training split. It selects the epoch on the test split, so it is optimistic.
- ``held_out_accuracy``: a second probe is trained on the training split less a validation slice, its epoch
  is chosen on that slice (the last epoch with the best validation accuracy), and the test split is scored
  once.

Each seed keeps the held-out probe's test predictions, from which :meth:`ProbeResult.interval` gives a
bootstrap interval over test groups (chains), :func:`compare_probes` compares two probes trained with the same
labels, groups and seeds (paired bootstrap interval of the difference, permutation test swapping whole
chains) and :func:`compare_agreement` the agreement of two probes with a third.
The held-out probe of the first seed is the one kept for predictions.

>>> g = torch.Generator().manual_seed(0)
>>> labels = torch.arange(60) % 2
>>> features = torch.randn(60, 3, 8, generator=g) + 2.0 * labels[:, None, None]
>>> result = train_probe(features, labels, ProbeConfig(epochs=10, lr=1e-2, seeds=(42,)))
>>> result.held_out_accuracy
1.0
>>> agreement(result.predict(features), labels)
1.0
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, no_type_check, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.results import ConfigDict, LabelledTensor
from reasonlens.validation import check_finite, check_float, check_int, check_int_list, check_tensor, load_saved

Arch = Literal["linear", "mlp", "lw_linear", "lw_mlp"]
ARCHS: tuple[str, ...] = ("linear", "mlp", "lw_linear", "lw_mlp")
MIN_PER_CLASS = 10
LAYER_METRICS: tuple[str, ...] = ("best_epoch_accuracy", "held_out_accuracy")


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class ProbeConfig(ConfigDict):
    """Probe architecture and training (defaults: the paper's LW-MLP protocol). ``validation_fraction`` of the
    training split selects the epoch of the held-out probe; ``device`` is where probes train."""

    arch: Arch = "lw_mlp"
    hidden: int = 128
    epochs: int = 30
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    seeds: Sequence[int] = (42, 43, 44)
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHS:
            raise ReasonlensError(f"unknown probe arch {self.arch!r}; choose from {ARCHS}")
        for name in ("hidden", "epochs", "batch_size"):
            check_int(getattr(self, name), name, low=1)
        check_float(self.lr, "lr", low=0, low_open=True)
        check_float(self.weight_decay, "weight_decay", low=0)
        if isinstance(self.seeds, (list, tuple, range)) and len(self.seeds) == 0:
            raise ReasonlensError("no seeds given; pass at least one, e.g. seeds=(42,)")
        seeds = check_int_list(self.seeds, "seeds", example="(42, 43)")
        for name in ("test_fraction", "validation_fraction"):
            check_float(getattr(self, name), name, low=0, high=1, low_open=True, high_open=True)
        if not isinstance(self.device, str):
            raise ReasonlensError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        object.__setattr__(self, "seeds", tuple(seeds))


# ---------------------------------------------------------------------------------------------------------- encoders


@runtime_checkable
class Encoder(Protocol):
    """Turns probe inputs (a feature tensor, or texts) into the flat float matrix a probe net reads."""

    def encode(self, inputs: Any) -> Float[Tensor, "step n_in"]: ...

    def to_dict(self) -> dict[str, Any]: ...


def _flat(features: Tensor, arch: str) -> Tensor:
    if features.ndim == 3:
        return features.mean(1) if arch in ("linear", "mlp") else features.reshape(len(features), -1)
    return features


@dataclass
class Standardiser:
    """Flattens features for ``arch`` (layer average or concatenation) and standardises them with the
    training split's mean and std (a constant feature is centred only). ``shape`` is one step's feature shape."""

    arch: str
    shape: tuple[int, ...]
    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, features: Tensor, arch: str) -> Standardiser:
        flat = _flat(features.float(), arch)
        std = flat.std(0, unbiased=False)
        return cls(arch, tuple(features.shape[1:]), flat.mean(0), torch.where(std > 1e-8, std, torch.ones_like(std)))

    def encode(self, inputs: Tensor) -> Tensor:
        if tuple(inputs.shape[1:]) != self.shape:
            raise ReasonlensError(f"this probe reads features of shape [step, {', '.join(map(str, self.shape))}], "
                                  f"got {list(inputs.shape)}; pass features made like the training ones")
        return (_flat(inputs.float(), self.arch) - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "standardiser", "arch": self.arch, "shape": list(self.shape), "mean": _pack(self.mean),
                "std": _pack(self.std)}


def _pack(t: Tensor) -> dict[str, Any]:
    data = t.detach().cpu().float().contiguous().numpy().tobytes()
    return {"shape": list(t.shape), "float32": base64.b64encode(data).decode("ascii")}


def _unpack(d: dict[str, Any]) -> Tensor:
    data = np.frombuffer(base64.b64decode(d["float32"]), dtype=np.float32).copy()
    return torch.from_numpy(data).reshape(d["shape"])


def tfidf_vectorizer():
    """The paper's vectorizer: ``TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 5), max_features=100000)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 5), max_features=100000)


@dataclass
class TfidfEncoder:
    """A TF-IDF vectorizer fitted on one training split; encodes texts as dense float32 rows (raw TF-IDF, not
    standardised, as the paper's probe reads them)."""

    vectorizer: Any

    @classmethod
    def fit(cls, texts: Sequence[str]) -> TfidfEncoder:
        return cls(tfidf_vectorizer().fit(list(texts)))

    @property
    def vocabulary(self) -> set[str]:
        """The n-grams the vectorizer kept."""
        return set(self.vectorizer.vocabulary_)

    def encode(self, inputs: Sequence[str]) -> Tensor:
        if isinstance(inputs, str) or not all(isinstance(t, str) for t in inputs):
            raise ReasonlensError("a text probe reads a list of step texts; pass e.g. steps.texts")
        return torch.from_numpy(self.vectorizer.transform(list(inputs)).toarray().astype(np.float32))

    def to_dict(self) -> dict[str, Any]:
        vocabulary = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        return {"kind": "tfidf", "vocabulary": vocabulary, "idf": self.vectorizer.idf_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TfidfEncoder:
        vectorizer = tfidf_vectorizer().set_params(vocabulary=d["vocabulary"])
        vectorizer.idf_ = np.asarray(d["idf"], dtype=np.float64)
        return cls(vectorizer)


def _encoder_from_dict(d: dict[str, Any]) -> Encoder:
    if d["kind"] == "standardiser":
        return Standardiser(d["arch"], tuple(d["shape"]), _unpack(d["mean"]), _unpack(d["std"]))
    return TfidfEncoder.from_dict(d)


# ---------------------------------------------------------------------------------------------------------- probes


def _net(arch: str, n_in: int, hidden: int) -> torch.nn.Module:
    if arch in ("linear", "lw_linear"):
        return torch.nn.Sequential(torch.nn.Linear(n_in, 1))
    return torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


@dataclass
class Probe:
    """A trained probe: its ``encoder`` (inputs -> flat matrix) and ``net`` (matrix -> one logit per step)."""

    encoder: Encoder
    net: torch.nn.Module
    arch: str
    n_in: int
    hidden: int

    def logits(self, inputs: Any) -> Float[Tensor, " step"]:
        """One logit per step (positive = removable)."""
        x = self.encoder.encode(inputs)
        device = next(self.net.parameters()).device
        self.net.eval()
        with torch.no_grad():
            return self.net(x.to(device)).squeeze(-1).cpu()

    def predict(self, inputs: Any) -> Int[Tensor, " step"]:
        """1 (removable) or 0 (important) per step."""
        return (self.logits(inputs) > 0).long()

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict(), "arch": self.arch, "n_in": self.n_in, "hidden": self.hidden,
                "state": {k: _pack(v) for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Probe:
        net = _net(d["arch"], d["n_in"], d["hidden"])
        net.load_state_dict({k: _unpack(v) for k, v in d["state"].items()})
        return cls(_encoder_from_dict(d["encoder"]), net, d["arch"], d["n_in"], d["hidden"])


@dataclass
class SeedRun:
    """One seed: ``n_per_class`` steps of each class after balancing (all kept steps with the step split, the
    training side with the grouped split), the paper's best-over-epochs test accuracy (``best_epoch``, 1-based)
    and the held-out one (``selected_epoch`` chosen on the validation slice, where it scored
    ``validation_accuracy``); accuracies are balanced (:func:`balanced_accuracy`). ``test_index`` are the test
    rows, ``test_labels`` their labels and ``test_predictions`` the held-out probe's 0 / 1 predictions on them (in
    that order; empty in files saved before they were kept), ``test_curve`` the paper probe's test accuracy after
    each epoch."""

    seed: int
    n_per_class: int
    best_epoch_accuracy: float
    best_epoch: int
    held_out_accuracy: float
    selected_epoch: int
    validation_accuracy: float
    test_index: list[int]
    test_curve: list[float]
    test_predictions: list[int] = field(default_factory=list)
    test_labels: list[int] = field(default_factory=list)


@dataclass
class ProbeResult:
    """Per-seed runs, the first seed's held-out probe and its ``predictions`` on every step it was trained
    from; means and (population) standard deviations over seeds; ``groups`` (one per step, e.g. its chain) when
    the split was grouped, else ``None``."""

    config: ProbeConfig
    runs: list[SeedRun]
    probe: Probe
    predictions: Int[Tensor, " step"]
    meta: dict[str, Any] = field(default_factory=dict)
    groups: list[int] | None = None

    def _stat(self, name: str) -> tuple[float, float]:
        values = np.array([getattr(r, name) for r in self.runs])
        return float(values.mean()), float(values.std())

    @property
    def best_epoch_accuracy(self) -> float:
        """Mean over seeds of the best test accuracy over epochs (the paper's protocol; optimistic)."""
        return self._stat("best_epoch_accuracy")[0]

    @property
    def best_epoch_std(self) -> float:
        return self._stat("best_epoch_accuracy")[1]

    @property
    def held_out_accuracy(self) -> float:
        """Mean over seeds of the test accuracy at the epoch chosen on the validation slice."""
        return self._stat("held_out_accuracy")[0]

    @property
    def held_out_std(self) -> float:
        return self._stat("held_out_accuracy")[1]

    @property
    def n_test_steps(self) -> list[int]:
        """Test rows of each seed (one entry per seed: a grouped split's test side varies in size)."""
        return [len(r.test_index) for r in self.runs]

    @property
    def n_test_groups(self) -> list[int]:
        """Distinct groups (chains) on each seed's test side (its rows without groups)."""
        return [len(np.unique(self._test_groups(r))) for r in self.runs]

    def _test_groups(self, run: SeedRun) -> np.ndarray:
        if self.groups is None:
            return np.arange(len(run.test_index))
        return np.asarray(self.groups)[run.test_index]

    def interval(self, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap interval of :attr:`held_out_accuracy`: each seed's test groups (chains; steps
        without groups) are resampled with replacement, rows of a group together, and the balanced accuracies
        are averaged over seeds.

        >>> g = torch.Generator().manual_seed(0)
        >>> labels, chains = torch.arange(120) % 2, torch.arange(120) // 4
        >>> features = torch.randn(120, 8, generator=g) + 1.5 * labels[:, None]
        >>> result = train_probe(features, labels, ProbeConfig(arch="linear", epochs=5, lr=1e-2, seeds=(0,)),
        ...                      groups=chains)
        >>> low, high = result.interval()
        >>> low <= result.held_out_accuracy <= high, result.n_test_steps, result.n_test_groups
        (True, [24], [6])
        """
        check_float(confidence, "confidence", low=0, high=1, low_open=True, high_open=True)
        check_int(n_resamples, "n_resamples", low=1)
        tables = [_tables(self._test_groups(r), np.asarray(r.test_labels), _hits(r, r.test_labels))
                  for r in _with_predictions(self)]
        scores = _bootstrap(tables, n_resamples, seed)[:, 0]
        return _percentiles(scores, confidence)

    def summary(self) -> dict[str, float]:
        return {"best_epoch_accuracy": self.best_epoch_accuracy, "best_epoch_std": self.best_epoch_std,
                "held_out_accuracy": self.held_out_accuracy, "held_out_std": self.held_out_std}

    def predict(self, inputs: Any) -> Int[Tensor, " step"]:
        """The first seed's held-out probe on new inputs (features shaped like the training ones, or texts)."""
        return self.probe.predict(inputs)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON: config, runs, predictions, groups, the probe's weights as base64 float32)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"config": self.config.to_dict(), "runs": [dataclasses.asdict(r) for r in self.runs],
                "probe": self.probe.to_dict(), "predictions": self.predictions.tolist(), "meta": self.meta,
                "groups": self.groups}
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeResult:
        """Read a file written by :meth:`save` (files saved before groups and test predictions were kept load
        with ``groups=None`` and empty ``test_predictions``)."""
        data = load_saved(path, cls.__name__, ("config", "runs", "probe", "predictions", "meta"), fmt="json")
        return cls(ProbeConfig.from_dict(data["config"]), [SeedRun(**r) for r in data["runs"]],
                   Probe.from_dict(data["probe"]), torch.tensor(data["predictions"], dtype=torch.long), data["meta"],
                   data.get("groups"))


# ---------------------------------------------------------------------------------------------------------- statistics
#
# A seed's test rows are summarised per group (chain) and class: ``hits[arm, group, class]`` (rows scored right
# by each probe, or agreeing with a reference) and ``counts[group, class]``. A score is the mean over the classes
# present of hits / counts (balanced accuracy; one class for agreement), so a bootstrap resample of groups is a
# weight vector over groups, and swapping two probes' rows of one group changes their difference by a fixed
# amount per group: the permutation test is a sign-flip test on the per-group contributions.


def _with_predictions(result: ProbeResult) -> list[SeedRun]:
    for r in result.runs:
        if len(r.test_predictions) != len(r.test_index) or len(r.test_labels) != len(r.test_index):
            raise ReasonlensError("this ProbeResult holds no test predictions (it was saved before they were kept); "
                                  "retrain it to get intervals and tests")
    return result.runs


def _hits(run: SeedRun, target: Sequence[int]) -> np.ndarray:
    return (np.asarray(run.test_predictions) == np.asarray(target)).astype(np.float64)


def _tables(groups: np.ndarray, classes: np.ndarray, *hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hits[arm, group, class]`` and ``counts[group, class]`` of one seed's test rows."""
    _, g = np.unique(groups, return_inverse=True)
    n_groups = int(g.max()) + 1
    cell = g * 2 + classes.astype(np.int64)
    counts = np.bincount(cell, minlength=2 * n_groups).reshape(n_groups, 2).astype(np.float64)
    table = np.stack([np.bincount(cell, weights=h, minlength=2 * n_groups).reshape(n_groups, 2) for h in hits])
    return table, counts


def _scores(table: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[resample, arm]`` scores under group ``weights[resample, group]``."""
    total = weights @ counts  # [resample, class]
    right = np.einsum("rg,agc->rac", weights, table)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total[:, None] > 0, right / total[:, None], np.nan)
    return np.nanmean(recall, axis=2)


def _bootstrap(tables: list[tuple[np.ndarray, np.ndarray]], n_resamples: int, seed: int) -> np.ndarray:
    """``[resample, arm]`` seed-averaged scores, each seed's groups resampled with replacement (the same
    resampled groups for every arm)."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for table, counts in tables:
        n_groups = counts.shape[0]
        picks = rng.integers(0, n_groups, (n_resamples, n_groups))
        weights = np.bincount((np.arange(n_resamples)[:, None] * n_groups + picks).ravel(),
                              minlength=n_resamples * n_groups).reshape(n_resamples, n_groups).astype(np.float64)
        total = total + _scores(table, counts, weights)
    return total / len(tables)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _paired(tables: list[tuple[np.ndarray, np.ndarray]], name: str, n_permutations: int, n_resamples: int,
            seed: int, n_test_steps: list[int]) -> dict[str, Any]:
    from reasonlens.stats import sign_flip_test

    check_int(n_permutations, "n_permutations", low=1)
    check_int(n_resamples, "n_resamples", low=1)
    point = np.mean([_scores(t, c, np.ones((1, c.shape[0])))[0] for t, c in tables], axis=0)
    boot = _bootstrap(tables, n_resamples, seed)
    contributions = []  # each (seed, group)'s share of the seed-averaged difference; a swap flips its sign
    for table, counts in tables:
        total = counts.sum(0)
        present = total > 0
        share = (table[0] - table[1])[:, present] / total[present]
        contributions.append(share.mean(1) / len(tables))
    units = torch.from_numpy(np.concatenate(contributions))
    p_value = float(sign_flip_test(units, n_permutations=n_permutations, seed=seed))
    return {name: [float(point[0]), float(point[1])],
            "ci95": [list(_percentiles(boot[:, 0], 0.95)), list(_percentiles(boot[:, 1], 0.95))],
            "difference": float(point[0] - point[1]),
            "difference_ci95": list(_percentiles(boot[:, 0] - boot[:, 1], 0.95)),
            "p_value": p_value, "n_test_steps": n_test_steps, "n_test_chains": [len(c) for _, c in tables]}


def _same_tests(*results: ProbeResult) -> None:
    first = results[0]
    for other in results[1:]:
        same = (len(other.runs) == len(first.runs) and other.groups == first.groups
                and all(a.seed == b.seed and a.test_index == b.test_index and a.test_labels == b.test_labels
                        for a, b in zip(first.runs, other.runs)))
        if not same:
            raise ReasonlensError("the probes were not scored on the same test rows (seeds, splits, labels or "
                                  "groups differ); train both with the same labels, groups and seeds")
    for result in results:
        _with_predictions(result)


def compare_probes(a: ProbeResult, b: ProbeResult, *, n_permutations: int = 10_000, n_resamples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Probe ``a`` against probe ``b`` on the same test rows (trained with the same labels, groups and seeds):
    their held-out balanced ``accuracy`` averaged over seeds with 95% bootstrap intervals (``ci95``: each seed's
    test groups resampled, the same groups for both), the ``difference`` a - b with its paired
    ``difference_ci95``, and ``p_value``, a two-sided paired permutation test that swaps the two probes'
    predictions of whole groups (chains; steps without groups) at random, independently per seed:
    ``(1 + #{|permuted difference| >= |difference|}) / (1 + n_permutations)``, every swap enumerated (exact) when
    ``2 ** (groups over all seeds) <= n_permutations``. ``n_test_steps`` and ``n_test_chains`` are per seed.

    >>> g = torch.Generator().manual_seed(0)
    >>> labels, chains = torch.arange(200) % 2, torch.arange(200) // 4
    >>> signal = torch.randn(200, 8, generator=g) + 2.0 * labels[:, None]
    >>> noise = torch.randn(200, 8, generator=g)
    >>> config = ProbeConfig(arch="linear", epochs=5, lr=1e-2, seeds=(0, 1))
    >>> out = compare_probes(train_probe(signal, labels, config, groups=chains),
    ...                      train_probe(noise, labels, config, groups=chains))
    >>> out["difference"] > 0.3, out["p_value"] < 0.01, out["n_test_chains"]
    (True, True, [10, 10])
    """
    _same_tests(a, b)
    tables = [_tables(a._test_groups(ra), np.asarray(ra.test_labels), _hits(ra, ra.test_labels),
                      _hits(rb, rb.test_labels)) for ra, rb in zip(a.runs, b.runs)]
    return _paired(tables, "accuracy", n_permutations, n_resamples, seed, a.n_test_steps)


def compare_agreement(reference: ProbeResult, a: ProbeResult, b: ProbeResult, *, n_permutations: int = 10_000,
                      n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The ``agreement`` of probe ``a`` and of probe ``b`` with ``reference`` (the fraction of test steps given
    the same label, each seed's held-out probes on that seed's test rows, averaged over seeds), e.g. a second
    model's probe and a random-init model's probe against the first model's. Same output and tests as
    :func:`compare_probes`, with ``agreement`` for ``accuracy``: the permutation swaps ``a``'s and ``b``'s
    predictions of whole groups.

    >>> g = torch.Generator().manual_seed(0)
    >>> labels, chains = torch.arange(200) % 2, torch.arange(200) // 4
    >>> signal = torch.randn(200, 8, generator=g) + 2.0 * labels[:, None]
    >>> config = ProbeConfig(arch="linear", epochs=5, lr=1e-2, seeds=(0,))
    >>> first, second = (train_probe(signal + 0.1 * torch.randn(200, 8, generator=g), labels, config, groups=chains)
    ...                  for _ in range(2))
    >>> noise = train_probe(torch.randn(200, 8, generator=g), labels, config, groups=chains)
    >>> out = compare_agreement(first, second, noise)
    >>> out["agreement"][0] > out["agreement"][1], out["p_value"] < 0.01
    (True, True)
    """
    _same_tests(reference, a, b)
    tables = [_tables(reference._test_groups(rr), np.zeros(len(rr.test_index)), _hits(ra, rr.test_predictions),
                      _hits(rb, rr.test_predictions)) for rr, ra, rb in zip(reference.runs, a.runs, b.runs)]
    return _paired(tables, "agreement", n_permutations, n_resamples, seed, reference.n_test_steps)


# ---------------------------------------------------------------------------------------------------------- training


def check_labels(labels: object, n_inputs: int) -> None:
    """Labels a probe can train on: a ``[step]`` tensor of 0 / 1, one per input, both classes present enough."""
    check_tensor(labels, "labels", ndim=1, non_empty=False, what="[step]")
    if labels.dtype.is_floating_point and not bool((labels == labels.round()).all()):
        raise ReasonlensError("labels must be 0 (important) or 1 (removable), got fractional values")
    if len(labels) != n_inputs:
        raise ReasonlensError(f"{n_inputs} feature rows but {len(labels)} labels; pass one label per step")
    values = set(labels.tolist())
    if not values <= {0, 1}:
        raise ReasonlensError(f"labels must be 0 (important) or 1 (removable), got {sorted(values - {0, 1})}")
    counts = labels.bincount(minlength=2).tolist()
    if 0 in counts:
        raise ReasonlensError(f"all {len(labels)} steps have label {labels[0].item()}; a probe needs both removable "
                              "(1) and important (0) steps")
    if min(counts) < MIN_PER_CLASS:
        raise ReasonlensError(f"{counts[0]} important and {counts[1]} removable steps; a probe needs at least "
                              f"{MIN_PER_CLASS} of each class, label more steps")


def _check_groups(groups: object, n: int) -> np.ndarray:
    check_tensor(groups, "groups", kind="int", ndim=1, non_empty=False, what="[step]")
    if len(groups) != n:
        raise ReasonlensError(f"{n} labels but {len(groups)} groups; pass one group (e.g. the chain index) per step")
    return groups.cpu().numpy()


def _group_fold(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                side: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``y``) of the first fold of ``StratifiedGroupKFold(round(1 / fraction))`` (the held-out
    side) and the rest; no group on both sides, both classes on both."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ReasonlensError(f"{n_groups} groups (chains) for a {side} fraction of {fraction}, which needs at least "
                              f"{n_splits}; label more chains")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(folds.split(np.zeros(len(y)), y, groups))
    for name, rows in ((f"{side} side", held), (f"side kept for training beside the {side} side", rest)):
        if len(np.unique(y[rows])) < 2:
            raise ReasonlensError(f"the {name} of the grouped split (seed {seed}) holds one class only; "
                                  "label more chains")
    return rest, held


def balanced_split(labels: Int[Tensor, " step"], seed: int, test_fraction: float = 0.2,
                   groups: Int[Tensor, " step"] | None = None) -> tuple[Int[Tensor, " train"], Int[Tensor, " test"]]:
    """Row indices of a seeded train / test split.

    Without ``groups`` (the step split): the larger class is subsampled to the size of the smaller one and the
    kept steps are split stratified, so both sides are balanced. With ``groups`` (e.g. the chain index of each
    step; the grouped split): no group has rows on both sides. The groups are split by the first fold of
    ``StratifiedGroupKFold(n_splits=round(1 / test_fraction), shuffle=True, random_state=seed)`` (at least two
    folds), then the training side is balanced by subsampling its larger class; every test row is kept, so the
    test side need not be balanced (score it with :func:`balanced_accuracy`).

    Raises :class:`ReasonlensError` when ``groups`` does not hold one integer per label, there are fewer groups
    than folds, or a side of the grouped split ends up with one class.

    >>> train, test = balanced_split(torch.tensor([0] * 30 + [1] * 20), seed=42)
    >>> len(train), len(test), torch.tensor([0] * 30 + [1] * 20)[test].sum().item()
    (32, 8, 4)
    >>> chains = torch.arange(50) // 5  # ten chains of five steps
    >>> train, test = balanced_split(torch.tensor([0] * 30 + [1] * 20), seed=42, groups=chains)
    >>> set(chains[train].tolist()) & set(chains[test].tolist())
    set()
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(seed)
    y = labels.cpu().numpy()
    if groups is None:
        n = int(min((y == 0).sum(), (y == 1).sum()))
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c in (0, 1)]))
        train, test = train_test_split(keep, test_size=test_fraction, stratify=y[keep], random_state=seed)
        return torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(test))
    g = _check_groups(groups, len(y))
    train, test = _group_fold(y, g, test_fraction, seed, "test")
    n = int(min((y[train] == 0).sum(), (y[train] == 1).sum()))
    train = np.concatenate([rng.choice(train[y[train] == c], n, replace=False) for c in (0, 1)])
    return torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(test))


def balanced_accuracy(predictions: Int[Tensor, " step"], labels: Int[Tensor, " step"]) -> float:
    """The mean over the classes present in ``labels`` of the fraction of their steps predicted right (the
    per-class recall); on a test side with as many steps of each class it is the plain accuracy.

    >>> balanced_accuracy(torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 1, 0, 0, 0]))  # (2/2 + 2/3) / 2
    0.8333333333333333
    """
    if len(predictions) != len(labels) or len(labels) == 0:
        raise ReasonlensError(f"{len(predictions)} predictions for {len(labels)} labels; pass one per step")
    right = predictions.long().cpu() == labels.long().cpu()
    return float(np.mean([right[labels.cpu() == c].double().mean().item() for c in labels.unique().tolist()]))


def _predict(net: torch.nn.Module, x: Tensor) -> Tensor:
    net.eval()
    with torch.no_grad():
        return (net(x).squeeze(-1) > 0).long()


def _accuracy(net: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    """The balanced accuracy (:func:`balanced_accuracy`) of ``net`` on ``(x, y)``."""
    return balanced_accuracy(_predict(net, x), y)


def _fit(x: Tensor, y: Tensor, evals: list[tuple[Tensor, Tensor]], config: ProbeConfig, seed: int,
         select_on: int | None) -> tuple[torch.nn.Module, list[list[float]], int]:
    """Train a probe on ``(x, y)``; the accuracy on each eval set after each epoch; with ``select_on``, the net
    is returned at the last epoch with the best accuracy on that eval set (ties go to the longer-trained net)
    and that epoch, else as trained."""
    device = torch.device(config.device)
    x, y = x.to(device), y.to(device)
    evals = [(ex.to(device), ey.to(device)) for ex, ey in evals]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _net(config.arch, x.shape[1], config.hidden).to(device)
    n_pos = int(y.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - n_pos) / n_pos, device=device))
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    shuffle = torch.Generator().manual_seed(seed)
    curves: list[list[float]] = [[] for _ in evals]
    best, best_state, best_epoch = -1.0, None, config.epochs
    for epoch in range(1, config.epochs + 1):
        net.train()
        for rows in torch.randperm(len(y), generator=shuffle).split(config.batch_size):
            rows = rows.to(device)
            opt.zero_grad()
            loss_fn(net(x[rows]).squeeze(-1), y[rows].float()).backward()
            opt.step()
        schedule.step()
        for curve, (ex, ey) in zip(curves, evals):
            curve.append(_accuracy(net, ex, ey))
        if select_on is not None and curves[select_on][-1] >= best:
            best, best_state, best_epoch = curves[select_on][-1], copy.deepcopy(net.state_dict()), epoch
    if best_state is not None:
        net.load_state_dict(best_state)
    return net, curves, best_epoch


def _validation_split(labels: Tensor, train: Tensor, groups: Tensor | None, fraction: float,
                      seed: int) -> tuple[Tensor, Tensor]:
    """The training rows less a validation slice, and the slice (stratified; grouped when ``groups`` is given)."""
    from sklearn.model_selection import train_test_split

    y = labels[train].numpy()
    if groups is None:
        parts = train_test_split(train.numpy(), test_size=fraction, stratify=y, random_state=seed)
    else:
        fit, val = _group_fold(y, groups[train].cpu().numpy(), fraction, seed, "validation")
        parts = [train.numpy()[fit], train.numpy()[val]]
    fit_rows, val_rows = (torch.as_tensor(np.sort(r)) for r in parts)
    return fit_rows, val_rows


def train_with_encoder(inputs: Any, labels: Tensor, take: Callable[[Any, Tensor], Any],
                       make_encoder: Callable[[Any], Encoder], config: ProbeConfig, progress: bool, *,
                       groups: Tensor | None = None) -> ProbeResult:
    """The protocol of this module for any inputs: ``take(inputs, rows)`` selects rows, ``make_encoder(train
    inputs)`` fits the encoder (standardiser, TF-IDF vectorizer) on a training split only. With ``groups`` (one
    integer per step, e.g. its chain), the test split and the validation slice are grouped
    (:func:`balanced_split`)."""
    from tqdm.auto import tqdm

    labels = labels.long().cpu()
    if groups is not None:
        _check_groups(groups, len(labels))
        groups = groups.long().cpu()
    runs, first = [], None
    for seed in tqdm(config.seeds, desc="probe seeds", unit="seed", disable=not progress):
        train, test = balanced_split(labels, seed, config.test_fraction, groups)
        encoder = make_encoder(take(inputs, train))
        _, (test_curve,), _ = _fit(encoder.encode(take(inputs, train)), labels[train],
                                   [(encoder.encode(take(inputs, test)), labels[test])], config, seed, None)
        fit_rows, val_rows = _validation_split(labels, train, groups, config.validation_fraction, seed)
        encoder = make_encoder(take(inputs, fit_rows))
        net, (val_curve,), epoch = _fit(encoder.encode(take(inputs, fit_rows)), labels[fit_rows],
                                        [(encoder.encode(take(inputs, val_rows)), labels[val_rows])], config, seed, 0)
        net = net.cpu()
        test_predictions = _predict(net, encoder.encode(take(inputs, test)))
        n_per_class = int(labels[train].sum()) + (int(labels[test].sum()) if groups is None else 0)
        runs.append(SeedRun(seed=seed, n_per_class=n_per_class,
                            best_epoch_accuracy=max(test_curve), best_epoch=int(np.argmax(test_curve)) + 1,
                            held_out_accuracy=balanced_accuracy(test_predictions, labels[test]),
                            selected_epoch=epoch, validation_accuracy=val_curve[epoch - 1],
                            test_index=test.tolist(), test_curve=test_curve,
                            test_predictions=test_predictions.tolist(), test_labels=labels[test].tolist()))
        if first is None:
            first = Probe(encoder, net, config.arch, net[0].in_features, config.hidden)
    return ProbeResult(config, runs, first, first.predict(inputs),
                       {"n_steps": len(labels), "n_removable": int(labels.sum())},
                       groups=None if groups is None else groups.tolist())


def _check_features(features: object, ndim: int | tuple[int, ...]) -> None:
    check_tensor(features, "features", kind="float", ndim=ndim,
                 what="[step, feature] or [step, layer, d_model]" if ndim != 3 else "[step, layer, d_model]")
    check_finite(features, "features", hint="a probe trained on them scores chance with no error; drop or repair "
                 "those steps (e.g. features[torch.isfinite(features).flatten(1).all(1)]) or recompute them")


def _take_rows(features: Tensor, rows: Tensor) -> Tensor:
    return features[rows]


def train_probe(features: Float[Tensor, "step layer d_model"] | Float[Tensor, "step feature"],
                labels: Int[Tensor, " step"], config: ProbeConfig = ProbeConfig(), *,
                groups: Int[Tensor, " step"] | None = None, progress: bool = False) -> ProbeResult:
    """Train and score a probe on ``features`` (from :func:`~reasonlens.importance.activations.step_activations`,
    or any ``[step, feature]`` matrix) with ``labels`` (1 = removable), once per seed of ``config``. With
    ``groups`` (one integer per step, e.g. its chain's index) no group is split between training and test
    (:func:`balanced_split`); the same labels, groups and seeds give the same splits to every probe.

    Raises :class:`ReasonlensError` when a class is missing or has fewer than ``MIN_PER_CLASS`` steps, for groups
    that cannot be split (see :func:`balanced_split`), and for features that are not a ``[step, feature]`` or
    ``[step, layer, d_model]`` float tensor or hold NaN or inf.
    """
    _check_features(features, (2, 3))
    check_labels(labels, len(features))
    arch = config.arch
    return train_with_encoder(features.float().cpu(), labels, _take_rows, lambda x: Standardiser.fit(x, arch), config,
                              progress, groups=groups)


def probe_by_layer(features: Float[Tensor, "step layer d_model"], labels: Int[Tensor, " step"],
                   config: ProbeConfig = ProbeConfig(), *, layer_labels: Sequence[str] | None = None,
                   groups: Int[Tensor, " step"] | None = None, progress: bool = False) -> LabelledTensor:
    """A single-layer probe per layer: accuracies ``[metric, seed, layer]`` (metrics ``best_epoch_accuracy``,
    ``held_out_accuracy``; the axis order of :func:`reasonlens.patching.relations.probe_scores`); ``values.mean(1)``
    averages the seeds. ``layer_labels`` name the layers
    (default ``"0", "1", ...``: the positions in ``features``, not necessarily model layers); ``groups`` as in
    :func:`train_probe`."""
    from tqdm.auto import tqdm

    _check_features(features, 3)
    check_labels(labels, len(features))
    n_layers = features.shape[1]
    names = list(layer_labels) if layer_labels is not None else [str(l) for l in range(n_layers)]
    if len(names) != n_layers:
        raise ReasonlensError(f"{len(names)} layer labels for {n_layers} layers; pass one per layer")
    values = torch.zeros(len(LAYER_METRICS), len(config.seeds), n_layers)
    for l in tqdm(range(n_layers), desc="layers", unit="layer", disable=not progress):
        result = train_probe(features[:, l], labels, config, groups=groups)
        for s, run in enumerate(result.runs):
            values[:, s, l] = torch.tensor([getattr(run, m) for m in LAYER_METRICS])
    return LabelledTensor(values, axes=("metric", "seed", "layer"),
                          labels={"metric": list(LAYER_METRICS), "seed": [str(s) for s in config.seeds],
                                  "layer": names},
                          meta={"config": dataclasses.asdict(config)})


def agreement(pred_a: Int[Tensor, " step"], pred_b: Int[Tensor, " step"]) -> float:
    """The fraction of steps given the same label by two probes.

    >>> agreement(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 1, 0]))
    0.5
    """
    if len(pred_a) != len(pred_b) or len(pred_a) == 0:
        raise ReasonlensError(f"predictions of {len(pred_a)} and {len(pred_b)} steps; pass two non-empty label "
                              "tensors over the same steps")
    return (pred_a.long() == pred_b.long()).float().mean().item()
