"""The HTML page of the Integrated Policy Gradient study (``reasonlens run ipg``)."""

from __future__ import annotations

import json

from reasonlens import plot
from reasonlens.attribution.study import MODES, IPGStudyResult
from reasonlens.reports.html import HtmlReport


def _interval(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def _difference(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={entry['p_value']:.3g}"


def ipg_report(result: IPGStudyResult):
    """One self-contained HTML page: the tables and figures of the study."""
    c = result.config
    summary = result.summary()
    support = summary["support"]
    original = summary["accuracy_original"]
    report = HtmlReport(f"Integrated Policy Gradient: {result.model}")
    report.paragraph(
        f"Components: {c.component} at layers {list(c.layers)}. Support: {c.seeds} disjoint sets of {c.n_support} "
        f"{c.task.name} questions, {c.n_samples} sampled chains each (temperature 0.6, top-p 0.8), q = {c.steps}, "
        f"zero baseline, right Riemann sum; rewards: {', '.join(c.rewards)} (IPG is the first; ipg_<reward> the "
        f"others, on the same samples). Evaluation: greedy decoding of the same {c.n_eval} held-out questions for "
        f"every setting; the unmodified model answers {_interval(original)}. Intervals: 95% bootstrap over seeds "
        f"and questions; p-values: paired sign-flip test on the questions.")
    informative = support["n_informative_prompts"]
    report.paragraph("Informative support prompts (groups whose rewards differ) per seed: "
                     + "; ".join(f"{r}: {v}" for r, v in informative.items())
                     + (f". {support['informative_note']}." if support["informative_note"] else "."))
    for mode in MODES:
        gamma = 0.0 if mode == "suppression" else c.enhance_gamma
        report.heading(f"{mode.capitalize()} (gamma = {gamma})")
        report.table([[m, *[_interval(summary[mode][m][str(p)]) for p in c.p_values]] for m in result.methods],
                     header=["method", *[f"p={p}" for p in c.p_values]])
        report.paragraph("IPG minus each method on the same questions (difference [95% interval], p-value):")
        report.table([[m, *[_difference(summary["paired"][mode][str(p)][m]) for p in c.p_values]]
                      for m in result.methods if m != "ipg"], header=["IPG minus", *[f"p={p}" for p in c.p_values]])
        curves = {m: {p: summary[mode][m][str(p)]["accuracy"] for p in c.p_values} for m in result.methods}
        intervals = {m: {p: summary[mode][m][str(p)]["ci95"] for p in c.p_values} for m in result.methods}
        report.figure(plot.accuracy_vs_p(curves, original["accuracy"], intervals=intervals,
                                         title=f"{mode} (gamma = {gamma})"))
    report.heading("IPG scores")
    report.figure(plot.component_heatmap(result.scores["ipg seed 0"], top_k=48, title="IPG score (first seed)"))
    report.heading("Ablations (first seed)")
    report.paragraph("Completeness gap: mean |scores summed - objective change| over informative prompts and layers, "
                     "relative to the mean |objective change|; Dice with the reference IPG's top "
                     f"{c.dice_p}; suppression accuracy at p = {max(c.p_values)} for each path baseline.")
    report.table([[r["name"], r["baseline"], r["steps"], r["rule"], r["completeness_gap"], r["dice_with_reference"],
                   r.get("suppression_accuracy")] for r in summary["ablations"]],
                 header=["variant", "baseline", "q", "rule", "completeness gap", "Dice with reference",
                         "suppression accuracy"])
    report.heading("Transfer to other task variants")
    transfer = summary["transfer"]
    report.paragraph(f"Suppression (gamma = 0) of the top {transfer['p']} components attributed on {c.task.name}, "
                     f"measured on {c.n_eval} questions of each variant, against random sets of the same size.")
    report.table([[name, _interval(row["original"]), _interval(row["ipg"]), _interval(row["random"]),
                   _difference(row["ipg_minus_random"])] for name, row in transfer.items() if name != "p"],
                 header=["variant", "unmodified", "IPG", "random", "IPG minus random"])
    report.heading("Stability (Dice of top-p sets)")
    d = summary["dice"]
    pairs = d["disjoint_support_sets"]
    report.paragraph(f"Top {d['p']} of {d['n_components']} components. Two random sets overlap "
                     f"{d['random_expectation']:.3f} on average (95% range {d['random_range95'][0]:.3f}-"
                     f"{d['random_range95'][1]:.3f}). Between the disjoint support sets: "
                     + (", ".join(f"{v:.3f}" for v in pairs["pairs"]) or "one seed only")
                     + (f" (mean {pairs['mean']:.3f})." if pairs["mean"] is not None else "."))
    report.figure(plot.dice_matrix(d["variants"], title="seeds and task variants"))
    report.heading("Length control")
    report.paragraph(f"IPG of the number of CoT steps ({c.redundant_step_p:.0%} of hops carry a redundant step in "
                     f"the data); its top {c.length_p} components scaled by gamma.")
    report.table([[g, v["accuracy"], v["mean_steps"], v["mean_tokens"]] for g, v in result.length_control.items()],
                 header=["gamma", "accuracy", "mean steps", "mean tokens"])
    report.figure(plot.gamma_sweep(result.length_control))
    report.heading("Top components")
    report.table([[m, " ".join(v)] for m, v in summary["top_components"].items()],
                 header=["attribution", "top components, best first"])
    report.paragraph(f"Seconds: {json.dumps({k: round(v, 1) for k, v in result.timings.items()})}")
    return report
