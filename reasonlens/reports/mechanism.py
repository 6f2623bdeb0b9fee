"""The HTML page of the chain-of-thought mechanism study (``reasonlens run cot-mechanism``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reasonlens import plot
from reasonlens.patching.mechanism import MechanismResult
from reasonlens.reports.html import HtmlReport

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _rate(p: dict[str, Any]) -> str:
    if p["rate"] is None:
        return "-"
    low, high = p["ci95"]
    return f"{p['rate']:.2f} [{low:.2f}, {high:.2f}]"


def mechanism_report(result: MechanismResult, model: TransformerBridge | None = None) -> Any:
    """One self-contained HTML page: findings table and every figure (an attention view of the top mover
    heads when ``model`` is given)."""

    summary = result.summary()
    config = result.config
    done = result.analysed()
    report = HtmlReport(f"Chain-of-thought mechanism (Dutta et al.): {result.model}")
    report.paragraph(
        f"{config.hops}-hop fictional chains in {config.ordering} context order, {config.n_examples} questions per "
        "subtask. The corruption replaces the occurrence each prediction reads (the stated sentence a copy "
        "restates, the chain's last mention of a decision's word, the queried property for the label). A pair is "
        f"scored when the clean run predicts the answer and the corruption {'switches the argmax away from it' if config.pair_filter == 'switched' else 'makes the run write the corrupted word'}"
        "; the label's pairs are balanced True / False. Head scores: clean z patched into the corrupted run at "
        f"all positions, normalised KL ({'ratio of batch means, as Dutta et al.' if config.normalize == 'batch' else 'mean of per-example ratios'}; "
        "1 = clean behaviour restored). Circuits: every other head mean-ablated over false-ontology prompts; "
        "agreement = argmax equal to the full model's.")
    report.heading("Pairs: what each corruption does")
    rows = []
    for s in result.subtasks:
        p = summary["pairs"][s.name]
        kl = p["kl_noise"]
        rows.append([s.name, p["candidates"], _rate(p["switch"]), _rate(p["corrupted_answer"]),
                     kl["median"], p["skipped_uncorruptible"], p["dropped_clean_wrong"], p["dropped_by_filter"],
                     p["dropped_to_balance"], p["kept"], f"{p['classes']['True']} / {p['classes']['False']}"])
    report.table(rows, header=["subtask", "candidates", "switch rate [95% CI]", "writes corrupted word",
                               "median KL_noise", "uncorruptible", "clean wrong", "filtered", "balance",
                               "kept", "True / False"])
    report.heading("Findings")
    fractions = summary["circuit_head_fraction_90"]
    rows = []
    for s in result.subtasks:
        if s.head_scores is None:
            rows.append([s.name, s.n_kept, None, None, None, None, None])
            continue
        paths = summary["pathways"][s.name]
        rows.append([s.name, s.n_kept, fractions[s.name], f"{s.circuit.band.size} ({s.circuit.band.agreement:.2f})",
                     " ".join(s.roles.top_heads("writer", 3)), " ".join(s.roles.top_heads("mover", 3)),
                     f"q {paths['question']} / cot {paths['cot']} / fs {paths['few_shot']}"])
    report.table(rows, header=["subtask", "pairs kept", "head fraction for 90%", "band circuit (agreement)",
                               "top writers", "top movers", "pathways by source"])
    report.table([
        ["mean head fraction for 90% agreement", fractions["mean"]],
        ["answer-writer share at relative depth >= 0.5", summary["writer_share_late"]],
        ["prior-vs-context crossover layer", summary["crossover_layer"]],
        ["crossover relative depth", summary["crossover_relative_depth"]],
    ], header=["finding", "value"])
    by_class = summary["label_agreement_by_class"]
    if by_class is not None:
        report.paragraph("Label circuits, agreement with the full model per clean label (k = heads kept, the "
                         "rest mean-ablated):")
        sizes = list(by_class["True"])
        report.table([[c, *[by_class[c][k] for k in sizes]] for c in ("True", "False")], header=["label", *sizes])
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
    few = summary["few_shot"]
    if few is not None:
        report.heading(f"Few-shot condition ({few['demonstrations']} demonstrations per prompt)")
        report.paragraph("The same study on prompts with solved demonstrations before the question (the other "
                         "questions of the set): pathways may now start in the demonstrations.")
        rows = []
        for s in result.few_shot:
            p = few["pairs"][s.name]
            paths = few["pathways"].get(s.name)
            band = few["circuit_band"].get(s.name)
            rows.append([s.name, p["candidates"], _rate(p["switch"]), p["kept"],
                         f"{band['heads']} ({band['agreement']:.2f})" if band else None,
                         f"q {paths['question']} / cot {paths['cot']} / fs {paths['few_shot']}" if paths else None])
        report.table(rows, header=["subtask", "candidates", "switch rate [95% CI]", "kept", "band circuit (agreement)",
                                   "pathways by source"])
    if result.horizon is not None:
        report.heading("Horizon: which layers still read the question as the chain grows")
        report.paragraph("One statement of the question replaced by an unrelated one; all heads' z of one layer "
                         "taken from that corrupted run while the model writes the rest of the chain from a gold "
                         "prefix of k sentences; the fraction of chains still right.")
        report.figure(plot.horizon_heatmap(result.horizon))
    if result.prior is not None:
        report.heading("Phase shift: prior vs context (logit lens, false ontologies)")
        report.figure(plot.prior_context_curves(result.prior))
    if result.relations is not None:
        report.heading("Relation probes")
        report.figure(plot.relation_probe_curves(result.relations))
    return report
