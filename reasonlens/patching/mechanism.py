"""The chain-of-thought mechanism study of Dutta et al. (TMLR 2024) in one call, on any model.

For every subtask of a k-hop chain (:mod:`reasonlens.patching.subtasks`): clean / corrupted pairs, per-head
patching scores (clean ``z`` into the corrupted run at all positions, normalised KL), circuit sufficiency by
mean ablation over false-ontology prompts, head roles, and the pathways of the information flow; once per
model: the prior-vs-context logit lens on false ontologies and the relation probes.

``reasonlens run cot-mechanism --model NAME --out DIR`` runs :func:`analyze_mechanism` and writes
``DIR/results.json`` (:meth:`MechanismResult.summary`), the per-analysis results and ``DIR/report.html``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasonlens.errors import ReasonlensError


@dataclass
class MechanismConfig:
    """Sizes of the study. ``subtasks``: indices into the ``hops``-hop layout (default: all). ``seed`` draws
    the questions (generator seeds ``reasonlens-{seed}-{i}``, disjoint from the reference models' training
    questions)."""

    hops: int = 2
    n_examples: int = 48
    subtasks: tuple[int, ...] | None = None
    seed: int = 2024
    n_reference: int = 48
    n_trace: int = 8
    n_conflict: int = 800
    n_relation: int = 120
    relation_seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 64


@dataclass
class SubtaskAnalysis:
    """Everything measured on one subtask."""

    subtask: dict[str, Any]
    n_kept: int
    n_dropped: int
    n_skipped: int
    n_flat: int
    head_scores: Any = None  # PatchingResult [example, layer, 1, head]
    circuit: Any = None  # CircuitResult
    roles: Any = None  # HeadRoles
    flow: Any = None  # FlowResult
    example_tokens: list[str] = field(default_factory=list)
    example_ids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.subtask["name"]


@dataclass
class MechanismResult:
    """The study's results; :meth:`summary` is the ``results.json`` content."""

    model: str
    config: MechanismConfig
    subtasks: list[SubtaskAnalysis]
    prior: Any  # PriorContextResult
    relations: Any  # RelationProbeResult
    n_layers: int
    n_heads: int

    def analysed(self) -> list[SubtaskAnalysis]:
        return [s for s in self.subtasks if s.head_scores is not None]

    def summary(self) -> dict[str, Any]:
        """Headline numbers: ``circuit_head_fraction_90`` (per subtask and ``"mean"``), ``writer_share_late``,
        ``crossover_relative_depth``, ``pathways`` (per subtask: counts by source) and ``n_pairs``."""
        done = self.analysed()
        fractions = {s.name: s.circuit.head_fraction_90 for s in done}
        reached = [f for f in fractions.values() if f is not None]
        shares = {s.name: s.roles.writer_share_late() for s in done}
        pathways = {}
        for s in done:
            counts = s.flow.counts_by_source()
            pathways[s.name] = {src: counts.get(src, 0) for src in ("question", "cot", "few_shot")}
        mover_depth = {s.name: _mean_depth(s.roles, "mover", self.n_layers) for s in done}
        writer_depth = {s.name: _mean_depth(s.roles, "writer", self.n_layers) for s in done}
        return {
            "model": self.model,
            "config": asdict(self.config),
            "circuit_head_fraction_90": {**fractions, "mean": sum(reached) / len(reached) if reached else None},
            "circuit_band": {s.name: {"heads": s.circuit.band.size, "agreement": s.circuit.band.agreement,
                                      "half_width": s.circuit.band.half_width} for s in done},
            "writer_share_late": sum(shares.values()) / len(shares) if shares else None,
            "writer_share_late_by_subtask": shares,
            "writer_mean_relative_depth": writer_depth,
            "mover_mean_relative_depth": mover_depth,
            "crossover_layer": self.prior.crossover_layer if self.prior is not None else None,
            "crossover_relative_depth": self.prior.crossover_relative_depth if self.prior is not None else None,
            "context_win_fraction_by_layer": (self.prior.context_win_fraction().tolist()
                                              if self.prior is not None else None),
            "relation_probe_accuracy": ({probe: self.relations.mean("accuracy")[i].tolist()
                                         for i, probe in enumerate(self.relations.probes)}
                                        if self.relations is not None else None),
            "pathways": pathways,
            "n_pairs": {"kept": sum(s.n_kept for s in self.subtasks),
                        "dropped": sum(s.n_dropped for s in self.subtasks),
                        "skipped": sum(s.n_skipped for s in self.subtasks),
                        "unchanged_by_corruption": sum(s.n_flat for s in self.subtasks),
                        "by_subtask": {s.name: {"kept": s.n_kept, "dropped": s.n_dropped, "skipped": s.n_skipped,
                                                "unchanged_by_corruption": s.n_flat} for s in self.subtasks}},
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``results.json`` and every analysis (``.pt`` files) under ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.summary(), indent=1))
        for i, s in enumerate(self.analysed()):
            s.head_scores.save(out / f"subtask{i:02d}_head_scores.pt")
            s.circuit.save(out / f"subtask{i:02d}_circuit.pt")
            s.roles.save(out / f"subtask{i:02d}_roles.pt")
            s.flow.save(out / f"subtask{i:02d}_flow.pt")
        if self.prior is not None:
            self.prior.save(out / "prior_vs_context.pt")
        if self.relations is not None:
            self.relations.save(out / "relation_probes.pt")
        return out


def _mean_depth(roles, role: str, n_layers: int, top: int = 4) -> float:
    layers = [int(h[1:].split("H")[0]) for h in roles.top_heads(role, k=top)]
    return sum((l + 0.5) / n_layers for l in layers) / len(layers)


def _keep_informative(model, pairs, batch_size: int):
    """Indices of pairs whose corrupted run changes the next-token distribution (KL > 1e-6): the
    normalised KL is undefined for the others."""
    from reasonlens.patching.engine import run_padded

    kls = []
    for start in range(0, len(pairs), batch_size):
        rows = slice(start, start + batch_size)
        clean = torch.log_softmax(run_padded(model, pairs.clean[rows], pairs.attention_mask[rows])[:, -1].float().cpu(), -1)
        corr = torch.log_softmax(run_padded(model, pairs.corrupted[rows], pairs.attention_mask[rows])[:, -1].float().cpu(), -1)
        kls.append((clean.exp() * (clean - corr)).sum(-1))
    kl = torch.cat(kls) if kls else torch.zeros(0)
    return (kl > 1e-6).nonzero().flatten()


def analyze_mechanism(model, config: MechanismConfig | None = None, *, model_name: str = "model",
                      progress: bool = True) -> MechanismResult:
    """Run the whole study on ``model`` (a TransformerBridge with a tokenizer)."""
    from tqdm.auto import tqdm

    from reasonlens.model import require_tokenizer
    from reasonlens.ontology import generate
    from reasonlens.patching.circuit import circuit_curve, mean_head_activations
    from reasonlens.patching.engine import patch
    from reasonlens.patching.flow import trace_pathways
    from reasonlens.patching.heads import head_roles
    from reasonlens.patching.lens import prior_vs_context
    from reasonlens.patching.relations import relation_probes
    from reasonlens.patching.subtasks import subtask_pairs, subtasks

    config = config or MechanismConfig()
    if config.n_examples < 2:
        raise ReasonlensError(f"n_examples must be at least 2, got {config.n_examples}")
    require_tokenizer(model)  # fail early, with the fix in the message
    layout = subtasks(config.hops)
    chosen = range(len(layout)) if config.subtasks is None else config.subtasks
    bad = [i for i in chosen if not 0 <= i < len(layout)]
    if bad:
        raise ReasonlensError(f"subtasks {bad} out of range: a {config.hops}-hop chain has 0..{len(layout) - 1}")
    gen = dict(hops=config.hops, distractor=False, extra_concepts=0, redundant_step_p=0.0)
    examples = generate(config.n_examples, kind="fictional", seed=config.seed, **gen)
    reference = generate(config.n_reference, kind="false", seed=config.seed + 1, false_mode="wrong_property", **gen)

    analyses = []
    for index in tqdm(list(chosen), desc="subtasks", disable=not progress):
        task = layout[index]
        info = {"index": index, "name": task.name, "kind": task.kind, "role": task.role, "slot": task.slot}
        pairs = subtask_pairs(model, examples, index, seed=config.seed, skip_uncorruptible=True,
                              batch_size=config.batch_size)
        keep = _keep_informative(model, pairs, config.batch_size) if len(pairs) else torch.zeros(0, dtype=torch.long)
        analysis = SubtaskAnalysis(info, n_kept=len(keep), n_dropped=pairs.n_dropped, n_skipped=pairs.n_skipped,
                                   n_flat=len(pairs) - len(keep))
        analyses.append(analysis)
        if len(keep) < 2:
            continue
        clean, corrupted, mask = pairs.clean[keep], pairs.corrupted[keep], pairs.attention_mask[keep]
        answer, source = pairs.answer[keep], pairs.source_position[keep]
        regions = [pairs.regions[i] for i in keep.tolist()]
        analysis.example_tokens = pairs.str_tokens[int(keep[0])]
        analysis.example_ids = clean[0][mask[0].bool()].tolist()
        analysis.head_scores = patch(model, clean, corrupted, attention_mask=mask, metric="kl", site="z",
                                     positions="all", batch_size=config.batch_size, progress=False)
        ref = subtask_pairs(model, reference, index, seed=config.seed, skip_uncorruptible=True,
                            batch_size=config.batch_size)
        ref_tokens, ref_mask = (ref.clean, ref.attention_mask) if len(ref) else (clean, mask)
        means = mean_head_activations(model, ref_tokens, ref_mask, batch_size=config.batch_size)
        scores = analysis.head_scores.mean()[:, 0]
        analysis.circuit = circuit_curve(model, clean, mask, scores, means, batch_size=config.batch_size)
        analysis.roles = head_roles(model, clean, mask, answer, source, batch_size=config.batch_size)
        n_trace = min(config.n_trace, len(keep))
        analysis.flow = trace_pathways(model, clean[:n_trace], mask[:n_trace], regions[:n_trace],
                                       circuit=analysis.circuit.band.keep, means=means)
    conflict = generate(config.n_conflict, kind="false", seed=config.seed + 2, hops=(1, 2, 3))
    prior = prior_vs_context(model, conflict, batch_size=config.batch_size)
    relation_examples = generate(config.n_relation, kind="fictional", seed=config.seed + 3, hops=(1, 2, 3))
    relations = relation_probes(model, relation_examples, seeds=config.relation_seeds, batch_size=config.batch_size)
    return MechanismResult(model_name, config, analyses, prior, relations, model.cfg.n_layers, model.cfg.n_heads)


def mechanism_report(result: MechanismResult, model=None) -> Any:
    """One self-contained HTML page: findings table and every figure (an attention view of the top mover
    heads when ``model`` is given)."""
    from reasonlens import plot
    from reasonlens.report import HtmlReport

    summary = result.summary()
    done = result.analysed()
    report = HtmlReport(f"Chain-of-thought mechanism (Dutta et al.): {result.model}")
    report.paragraph(
        f"{result.config.hops}-hop fictional chains, {result.config.n_examples} questions per subtask; a pair is "
        "kept when the clean run predicts the answer and the corruption changes the next-token distribution. "
        "Head scores: clean z patched into the corrupted run at all positions, normalised KL "
        "(1 = clean behaviour restored). Circuits: every other head mean-ablated over false-ontology prompts; "
        "agreement = argmax equal to the full model's.")
    report.heading("Findings")
    fractions = summary["circuit_head_fraction_90"]
    rows = []
    for s in result.subtasks:
        if s.head_scores is None:
            rows.append([s.name, s.n_kept, s.n_dropped, None, None, None, None, None])
            continue
        paths = summary["pathways"][s.name]
        rows.append([s.name, s.n_kept, s.n_dropped, fractions[s.name], f"{s.circuit.band.size} ({s.circuit.band.agreement:.2f})",
                     " ".join(s.roles.top_heads("writer", 3)), " ".join(s.roles.top_heads("mover", 3)),
                     f"q {paths['question']} / cot {paths['cot']} / fs {paths['few_shot']}"])
    report.table(rows, header=["subtask", "pairs kept", "dropped", "head fraction for 90%", "band circuit (agreement)",
                               "top writers", "top movers", "pathways by source"])
    mean_fraction = fractions["mean"]
    report.table([
        ["mean head fraction for 90% agreement", mean_fraction],
        ["answer-writer share at relative depth >= 0.5", summary["writer_share_late"]],
        ["prior-vs-context crossover layer", summary["crossover_layer"]],
        ["crossover relative depth", summary["crossover_relative_depth"]],
    ], header=["finding", "value"])
    if done:
        report.heading("Per-head patching scores")
        report.figure(plot.head_heatmap({s.name: s.head_scores for s in done}, title="normalised KL restored"))
        report.heading("Circuit sufficiency")
        report.figure(plot.circuit_curves({s.name: s.circuit for s in done}))
        report.heading("Head roles")
        report.figure(plot.head_heatmap({s.name: s.roles.writer for s in done}, title="answer-writer score"))
        report.figure(plot.head_heatmap({s.name: s.roles.mover for s in done}, title="mover score (attention to source)"))
        report.heading("Pathways")
        first = done[0]
        report.paragraph(f"Information-flow tree of the first traced example of {first.name}.")
        report.figure(plot.pathway_graph(first.flow, 0, tokens=first.example_tokens))
        if model is not None and first.example_ids:
            report.heading("Attention of the top mover heads")
            report.paragraph(plot.attention_view(model, first.example_ids, first.roles.top_heads("mover", 4)),
                             raw_html=True)
    if result.prior is not None:
        report.heading("Phase shift: prior vs context (logit lens, false ontologies)")
        report.figure(plot.prior_context_curves(result.prior))
    if result.relations is not None:
        report.heading("Relation probes")
        report.figure(plot.relation_probe_curves(result.relations))
    return report
