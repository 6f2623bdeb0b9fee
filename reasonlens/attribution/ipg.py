"""Integrated Policy Gradient (Li et al. 2026): attribute a reasoning outcome to model components.

For each prompt of a support set, ``N`` chains of thought are sampled (temperature 0.6, top-p 0.8), scored by a
reward, and given GRPO advantages ``A_n = (r_n - mean r) / std r`` (sample std; all zero when every reward in
the group is equal: such groups are counted, never a NaN). The score of component ``i`` is the path integral,
from a baseline ``h'`` (zero, the support set's mean, or Gaussian noise) to the actual activation ``h``, of the
gradient of ``(1/N) sum_n A_n sum_t log pi(a_t | s_t)``, times ``h - h'``, summed over the positions that
predict the sampled tokens (right Riemann sum with ``steps`` points), then averaged over the ``M`` prompts:
see :mod:`reasonlens.attribution.paths`. ``steps=1`` is the paper's raw policy gradient (the gradient at the
actual activation times ``h - h'``).

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> model = load_model("reasonlens-headroom")
>>> ipg = IntegratedPolicyGradient(model, IPGConfig(component="head", layers=(3, 4), n_samples=4, steps=4))
>>> scores = ipg.attribute(generate(4, hops=2, seed=11))
>>> scores.values.shape  # [example, layer, unit]
torch.Size([4, 2, 4])
>>> len(scores.top(3)), scores.top(3).component
(3, 'head')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.attribution.components import COMPONENTS, Selection, check_component, check_layers, n_units, unit_labels
from reasonlens.attribution.paths import BASELINES, RULES, PathSequences, path_attributions
from reasonlens.attribution.rewards import Reward, Trajectory, correctness, score
from reasonlens.errors import ReasonlensError
from reasonlens.ontology import Example
from reasonlens.results import ConfigDict, LabelledTensor
from reasonlens.validation import check_choice, check_float, check_int, check_int_list, is_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass(frozen=True)
class IPGConfig(ConfigDict):
    """Settings of an attribution run.

    - ``component``: ``"resid"`` (dimensions of ``hook_resid_post``), ``"neuron"`` (``mlp.hook_post``) or ``"head"``
      (a gate on ``attn.hook_z``); ``layers``: which layers (None: all), each with its own path.
    - ``steps`` (q): Riemann points, ``alpha = k / steps`` for ``k = 1..steps``; 1 is the raw policy gradient.
    - ``rule``: ``"right"`` (the paper's right Riemann sum), ``"midpoint"`` or ``"trapezoid"`` (errors O(1/q^2)
      instead of O(1/q); see :func:`~reasonlens.attribution.paths.quadrature`).
    - ``baseline``: ``"zero"``, ``"mean"`` (the mean activation over the support set's trajectories) or
      ``"noise"`` (standard Gaussian); heads always use gate 0.
    - ``n_samples`` (N), ``temperature``, ``top_p``, ``max_new_tokens``: the sampled group per prompt.
    - ``batch_size``: rows (trajectory x step) per forward and backward; bounds memory.
    - ``seed``: sampling and noise.
    """

    component: str = "resid"
    layers: tuple[int, ...] | None = None
    steps: int = 10
    rule: str = "right"
    baseline: str = "zero"
    n_samples: int = 5
    temperature: float = 0.6
    top_p: float = 0.8
    max_new_tokens: int = 96
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_component(self.component)
        layers = check_int_list(self.layers, "layers", low=0, optional=True, example="(3, 4) (or None for all)")
        object.__setattr__(self, "layers", None if layers is None else tuple(layers))
        _check_steps(self.steps, self.rule)
        if not is_int(self.n_samples) or self.n_samples < 2:
            raise ReasonlensError(f"n_samples (N) must be an integer, at least 2: advantages compare trajectories within a "
                                  f"group, got {self.n_samples!r}")
        if not isinstance(self.baseline, str) or self.baseline not in BASELINES:
            raise ReasonlensError(f"unknown baseline {self.baseline!r}; use one of {', '.join(BASELINES)}")
        if self.component == "head" and self.baseline != "zero":
            raise ReasonlensError("head attributions gate z from 0 to 1; baseline must be 'zero'")
        check_float(self.temperature, "temperature", low=0, low_open=True, hint="sampling a group needs > 0")
        check_float(self.top_p, "top_p", low=0, high=1, low_open=True, hint="1 = no nucleus filtering")
        check_int(self.max_new_tokens, "max_new_tokens", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.seed, "seed")


def _check_steps(steps: object, rule: object) -> None:
    if not is_int(steps) or steps < 1:
        raise ReasonlensError(f"steps (q) must be an integer >= 1 (1 = raw policy gradient), got {steps!r}")
    check_choice(rule, "rule", RULES)
    if steps == 1 and rule != "right":
        raise ReasonlensError(f"steps=1 is the raw policy gradient, the gradient at the actual activation (the right "
                              f"rule); a {rule} rule needs steps >= 2")


class Attribution(LabelledTensor):
    """Per-prompt component scores ``[example, layer, unit]`` (labels ``L3`` and ``R17`` / ``N5`` / ``H1``);
    ``mean()`` is the score ``S`` that :meth:`top` ranks. ``meta`` holds the method, its settings, and for
    IPG the rewards, advantages, the number of zero-advantage groups and the objective change along each
    layer's path (``objective_change[example][layer]``, what the scores of that layer sum to as q grows)."""

    @property
    def component(self) -> str:
        return self.meta["component"]

    @property
    def layers(self) -> list[int]:
        return [int(l[1:]) for l in self.axis_labels("layer")]

    @property
    def n_informative(self) -> int:
        """Prompts whose scores are not all zero (for IPG: groups whose rewards differ)."""
        return int(self.values.flatten(1).ne(0).any(1).sum())

    def completeness(self) -> tuple[Float[Tensor, "example layer"], Float[Tensor, "example layer"]]:
        """``(scores summed over units, objective change along the path)`` per example and layer: equal up to
        the Riemann error (see :mod:`reasonlens.attribution.paths`)."""
        if "objective_change" not in self.meta:
            raise ReasonlensError(f"{self.meta.get('method')!r} scores carry no objective change; completeness applies "
                                  "to ipg, raw_pg and integrated_gradients")
        return self.values.sum(-1), torch.tensor(self.meta["objective_change"], dtype=self.values.dtype)

    def component_labels(self) -> list[str]:
        """``["L3R0", "L3R1", ...]`` in the order of ``mean().flatten()``."""
        return [f"{l}{u}" for l in self.axis_labels("layer") for u in self.axis_labels("unit")]

    def ranked_labels(self, k: int) -> list[str]:
        """Labels of the ``k`` components with the largest signed mean score, best first."""
        order = torch.sort(self.mean().flatten(), descending=True, stable=True).indices[:k]
        labels = self.component_labels()
        return [labels[int(i)] for i in order]

    def top(self, p: int) -> Selection:
        """The ``p`` components with the largest signed mean score (over all attributed layers)."""
        scores = self.mean().flatten()
        if not is_int(p) or not 0 <= p <= scores.numel():
            raise ReasonlensError(f"p must be an integer in 0..{scores.numel()} (the attributed components), got {p!r}")
        if p and not bool(scores.ne(0).any()):
            raise ReasonlensError("every score is zero, so there is no ranking to select from (for IPG: every group "
                                  "of sampled chains had equal rewards); use more prompts, more samples or a "
                                  "model with headroom")
        order = torch.sort(scores, descending=True, stable=True).indices[:p]
        n = self.values.shape[-1]
        return Selection(self.component, tuple(self.layers[int(i) // n] for i in order), tuple(int(i) % n for i in order))


@dataclass(frozen=True)
class SampledGroups:
    """The ``n_samples`` chains sampled for each prompt of a support set (:meth:`IntegratedPolicyGradient.sample`):
    ``trajectories[m * n_samples + n]`` is sample ``n`` of prompt ``m``; ``settings`` the sampling settings used.
    Pass it to :meth:`IntegratedPolicyGradient.attribute` to score the same chains with another reward, q, rule
    or baseline without sampling again."""

    examples: tuple[Example, ...]
    trajectories: tuple[Trajectory, ...]
    n_samples: int
    settings: tuple[float, float, int, int]  # temperature, top_p, max_new_tokens, seed


@dataclass
class IntegratedPolicyGradient:
    """IPG of ``reward`` (default: answer correctness) for ``model``; :meth:`attribute` runs it."""

    model: TransformerBridge
    config: IPGConfig = field(default_factory=IPGConfig)
    reward: Reward = correctness

    def sample(self, examples: Sequence[Example], *, progress: bool = False) -> SampledGroups:
        """Sample ``n_samples`` chains of thought per prompt (the config's temperature, top-p, budget and seed)."""
        from reasonlens.generation import GenerationConfig, generate
        from reasonlens.model import require_tokenizer
        from reasonlens.ontology import format_prompt

        cfg, model = self.config, self.model
        examples = _check_examples(examples)
        require_tokenizer(model)
        gen = generate(model, [format_prompt(e) for e in examples],
                       GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                        top_p=cfg.top_p, seed=cfg.seed, num_samples=cfg.n_samples,
                                        batch_size=max(cfg.batch_size, cfg.n_samples), drop_finished=True),
                       progress=progress)
        if list(gen.prompt_index) != [i // cfg.n_samples for i in range(len(gen))]:
            raise ReasonlensError("generation returned the samples out of prompt order")  # grouped by prompt below
        trajectories = tuple(Trajectory(gen.texts[i], gen.answers[i], gen.output_ids[i], gen.prompt_ids[i])
                             for i in range(len(gen)))
        return SampledGroups(tuple(examples), trajectories, cfg.n_samples, self._settings())

    def _settings(self) -> tuple[float, float, int, int]:
        cfg = self.config
        return (cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed)

    def attribute(self, examples: Sequence[Example], *, samples: SampledGroups | None = None,
                  progress: bool = False) -> Attribution:
        """Sample, score and attribute over the support set ``examples`` (M prompts); with ``samples`` (from
        :meth:`sample` on the same examples and sampling settings), score those chains instead of sampling."""
        cfg, model = self.config, self.model
        examples = _check_examples(examples)
        layers = check_layers(model, range(model.cfg.n_layers) if cfg.layers is None else cfg.layers)
        if samples is None:
            samples = self.sample(examples, progress=progress)
        elif (samples.examples != tuple(examples) or samples.n_samples != cfg.n_samples
              or samples.settings != self._settings()):
            raise ReasonlensError("these samples were drawn for other examples or other sampling settings (n_samples, "
                                  "temperature, top_p, max_new_tokens, seed); sample again with this config")
        trajectories = samples.trajectories
        rewards = torch.tensor([score(self.reward, examples[i // cfg.n_samples], t)
                                for i, t in enumerate(trajectories)], dtype=torch.float64)
        rewards = rewards.reshape(len(examples), cfg.n_samples)
        advantages = group_advantages(rewards)
        informative = [(m, n) for m in range(len(examples)) for n in range(cfg.n_samples)
                       if advantages[m, n] != 0 and len(trajectories[m * cfg.n_samples + n].output_ids) > 0]
        units = n_units(model, cfg.component)
        values = torch.zeros(len(examples), len(layers), units)
        change = torch.zeros(len(examples), len(layers))
        if informative:
            seqs = PathSequences(
                prompt_ids=[trajectories[m * cfg.n_samples + n].prompt_ids for m, n in informative],
                output_ids=[trajectories[m * cfg.n_samples + n].output_ids for m, n in informative],
                weights=[float(advantages[m, n]) / cfg.n_samples for m, n in informative],
                n_target=[None] * len(informative))
            result = path_attributions(model, cfg.component, layers, seqs, steps=cfg.steps, rule=cfg.rule,
                                       baseline=cfg.baseline, batch_size=cfg.batch_size, seed=cfg.seed,
                                       progress=progress)
            prompt_of = torch.tensor([m for m, _ in informative])
            values.index_add_(0, prompt_of, result.attributions)
            change.index_add_(0, prompt_of, result.objective_end[:, None] - result.objective_start)
        zero_groups = int((advantages == 0).all(1).sum())
        return Attribution(values, axes=("example", "layer", "unit"),
                           labels={"layer": [f"L{l}" for l in layers], "unit": unit_labels(cfg.component, units)},
                           meta={"method": "ipg" if cfg.steps > 1 else "raw_pg", "component": cfg.component,
                                 "config": {**asdict(cfg), "layers": layers},
                                 "reward": _describe(self.reward),
                                 "rewards": rewards.tolist(), "advantages": advantages.tolist(),
                                 "n_zero_advantage_groups": zero_groups, "objective_change": change.tolist(),
                                 "texts": [[t.text for t in trajectories[m * cfg.n_samples:(m + 1) * cfg.n_samples]]
                                           for m in range(len(examples))]})


def group_advantages(rewards: Float[Tensor, "prompt sample"]) -> Float[Tensor, "prompt sample"]:
    """GRPO advantages ``(r - mean) / std`` within each prompt's group (sample std); zero for a group whose
    rewards are all equal.

    >>> group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)).tolist()
    [[0.8660254037844387, -0.8660254037844387, -0.8660254037844387, 0.8660254037844387], [0.0, 0.0, 0.0, 0.0]]
    """
    if rewards.shape[-1] < 2:
        raise ReasonlensError("advantages need at least two samples per prompt")
    centred = rewards - rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, keepdim=True)
    flat = std <= 1e-12 * rewards.abs().amax(-1, keepdim=True).clamp_min(1)
    return torch.where(flat, torch.zeros_like(centred), centred / torch.where(flat, torch.ones_like(std), std))


@no_type_check  # checked by __post_init__, so a bad value gets the ReasonlensError under the test run's type checks too
@dataclass
class IntegratedGradients:
    """Plain integrated gradients of the gold answer's log-probability, teacher-forced on each example's gold
    chain of thought (``prompt + " {cot} {answer}"``), along the same path as IPG (the positions of the chain are
    interpolated): a non-policy-gradient contrast. Settings as in :class:`IPGConfig`."""

    model: TransformerBridge
    component: str = "resid"
    layers: Sequence[int] | None = None
    steps: int = 10
    rule: str = "right"
    baseline: str = "zero"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_component(self.component)
        _check_steps(self.steps, self.rule)
        check_choice(self.baseline, "baseline", BASELINES)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.seed, "seed")
        self.layers = check_layers(self.model, range(self.model.cfg.n_layers) if self.layers is None else self.layers)

    def attribute(self, examples: Sequence[Example], *, progress: bool = False) -> Attribution:
        from reasonlens.model import require_tokenizer
        from reasonlens.ontology import format_prompt

        model, layers = self.model, self.layers
        examples = _check_examples(examples)
        tok = require_tokenizer(model)
        prompt_ids = [model.to_tokens(format_prompt(e), truncate=False)[0].tolist() for e in examples]
        output_ids, n_target = [], []
        for e in examples:
            chain = tok(" " + e.cot_text, add_special_tokens=False)["input_ids"]
            answer = tok(" " + e.answer, add_special_tokens=False)["input_ids"]
            output_ids.append(chain + answer)
            n_target.append(len(answer))
        seqs = PathSequences(prompt_ids, output_ids, [1.0] * len(examples), n_target)
        result = path_attributions(model, self.component, layers, seqs, steps=self.steps, rule=self.rule,
                                   baseline=self.baseline, batch_size=self.batch_size, seed=self.seed,
                                   progress=progress)
        return Attribution(result.attributions, axes=("example", "layer", "unit"),
                           labels={"layer": [f"L{l}" for l in layers],
                                   "unit": unit_labels(self.component, result.attributions.shape[-1])},
                           meta={"method": "integrated_gradients", "component": self.component,
                                 "config": {"layers": layers, "steps": self.steps, "rule": self.rule,
                                            "baseline": self.baseline, "seed": self.seed},
                                 "objective_change": (result.objective_end[:, None] - result.objective_start).tolist()})


@no_type_check  # checked by __post_init__
@dataclass
class ActivationMagnitude:
    """The activation baseline: mean ``|h_i|`` (heads: mean L2 norm of ``z``) over the positions of each
    example's greedy chain of thought (``max_new_tokens``: by default the gold chain's length plus 16, as in
    :func:`~reasonlens.attribution.steering.steer`)."""

    model: TransformerBridge
    component: str = "resid"
    layers: Sequence[int] | None = None
    max_new_tokens: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_component(self.component)
        check_int(self.max_new_tokens, "max_new_tokens", low=1, optional=True)
        check_int(self.batch_size, "batch_size", low=1)
        self.layers = check_layers(self.model, range(self.model.cfg.n_layers) if self.layers is None else self.layers)

    def attribute(self, examples: Sequence[Example], *, progress: bool = False) -> Attribution:
        from reasonlens.attribution.components import HOOKS
        from reasonlens.attribution.steering import decoding_budget
        from reasonlens.generation import GenerationConfig, generate
        from reasonlens.ontology import format_prompt

        model, component, layers = self.model, self.component, self.layers
        examples = _check_examples(examples)
        budget = decoding_budget(model, examples) if self.max_new_tokens is None else self.max_new_tokens
        gen = generate(model, [format_prompt(e) for e in examples],
                       GenerationConfig(max_new_tokens=budget, batch_size=self.batch_size), progress=progress)
        names = [HOOKS[component].format(l=l) for l in layers]
        values = torch.zeros(len(examples), len(layers), n_units(model, component))
        for i, (prompt, output) in enumerate(zip(gen.prompt_ids, gen.output_ids)):
            if not output:
                continue
            ids = torch.tensor([prompt + output], device=model.cfg.device)
            with torch.no_grad():
                _, cache = model.run_with_cache(ids, names_filter=names)
            for li, n in enumerate(names):
                act = cache[n][0, len(prompt) - 1:len(prompt) - 1 + len(output)].float()
                values[i, li] = (act.norm(dim=-1) if component == "head" else act.abs()).mean(0).cpu()
        return Attribution(values, axes=("example", "layer", "unit"),
                           labels={"layer": [f"L{l}" for l in layers], "unit": unit_labels(component, values.shape[-1])},
                           meta={"method": "activation", "component": component, "config": {"layers": layers}})


@no_type_check  # checked by __post_init__
@dataclass
class RandomAttribution:
    """The random baseline: scores that rank the components of ``layers`` in a uniformly random order drawn with
    ``seed``, the same for every example, so ``.top(p)`` is ``p`` components drawn uniformly without
    replacement."""

    model: TransformerBridge
    component: str = "resid"
    layers: Sequence[int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_component(self.component)
        check_int(self.seed, "seed")
        self.layers = check_layers(self.model, range(self.model.cfg.n_layers) if self.layers is None else self.layers)

    def attribute(self, examples: Sequence[Example] | None = None, *, progress: bool = False) -> Attribution:
        """One row of scores per example (one row for ``None``); the examples themselves are not read."""
        layers = self.layers
        n_rows = 1 if examples is None else len(_check_examples(examples))
        n, total = n_units(self.model, self.component), n_units(self.model, self.component) * len(layers)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(self.seed))
        scores = torch.empty(total)
        scores[order] = torch.arange(total, 0, -1, dtype=torch.float32)  # the first drawn scores highest
        return Attribution(scores.reshape(1, len(layers), n).expand(n_rows, -1, -1).clone(),
                           axes=("example", "layer", "unit"),
                           labels={"layer": [f"L{l}" for l in layers], "unit": unit_labels(self.component, n)},
                           meta={"method": "random", "component": self.component,
                                 "config": {"layers": layers, "seed": self.seed}})


def _describe(reward) -> str:
    name = getattr(reward, "__name__", None)
    return repr(reward) if name in (None, "<lambda>") else name


def _check_examples(examples: object) -> list[Example]:
    if isinstance(examples, (str, bytes, Example)) or not isinstance(examples, Iterable):
        raise ReasonlensError(f"examples must be a list of reasonlens.ontology.Example, got {type(examples).__name__}; "
                              "pass e.g. reasonlens.ontology.generate(20)")
    examples = list(examples)
    if not examples:
        raise ReasonlensError("no examples: the support set is empty; pass e.g. reasonlens.ontology.generate(20)")
    bad = [i for i, e in enumerate(examples) if not isinstance(e, Example)]
    if bad:
        raise ReasonlensError(f"examples[{bad[0]}] is a {type(examples[bad[0]]).__name__}, not a "
                              "reasonlens.ontology.Example; pass generated or imported questions")
    return examples


__all__ = ["COMPONENTS", "Attribution", "IPGConfig", "IntegratedPolicyGradient", "IntegratedGradients",
           "ActivationMagnitude", "RandomAttribution", "group_advantages"]
