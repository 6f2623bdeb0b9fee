"""The HTML page of the Integrated Policy Gradient study (``reasonlens run ipg``)."""

from __future__ import annotations

import json

from reasonlens import plot
from reasonlens.attribution.study import METHODS, IPGStudyResult
from reasonlens.reports.html import HtmlReport


def ipg_report(result: IPGStudyResult):
    """One self-contained HTML page: the tables and figures of the study."""

    c = result.config
    report = HtmlReport(f"Integrated Policy Gradient: {result.model}")
    report.paragraph(
        f"Components: {c.component} at layers {list(c.layers)}. Support set: {c.n_support} {c.task.name} questions, "
        f"{c.n_samples} sampled chains each (temperature 0.6, top-p 0.8), q = {c.steps}, zero baseline; reward: "
        f"answer correctness. Evaluation: greedy decoding of {c.n_eval} held-out questions; the unmodified model "
        f"answers {result.accuracy_original:.1%} correctly.")
    report.heading("Suppression (gamma = 0) and enhancement")
    header = ["method", *[f"p={p}" for p in c.p_values]]
    for title, table in (("suppression, gamma = 0", result.suppression),
                         (f"enhancement, gamma = {c.enhance_gamma}", result.enhancement)):
        report.paragraph(title)
        report.table([[m, *[table[m][p] for p in c.p_values]] for m in METHODS], header=header)
    report.figure(plot.accuracy_vs_p(result.suppression, result.accuracy_original, title="suppression (gamma = 0)"))
    report.figure(plot.accuracy_vs_p(result.enhancement, result.accuracy_original,
                                     title=f"enhancement (gamma = {c.enhance_gamma})"))
    report.heading("IPG scores")
    report.figure(plot.component_heatmap(result.scores["ipg"], top_k=48, title="IPG score (correctness)"))
    report.heading("Length control")
    report.paragraph(f"IPG of the number of CoT steps ({c.redundant_step_p:.0%} of hops carry a redundant step in "
                     f"the data); its top {c.length_p} components scaled by gamma.")
    report.table([[g, v["accuracy"], v["mean_steps"], v["mean_tokens"]] for g, v in result.length_control.items()],
                 header=["gamma", "accuracy", "mean steps", "mean tokens"])
    report.figure(plot.gamma_sweep(result.length_control))
    report.heading("Stability (Dice of top-p sets)")
    d = result.dice
    report.paragraph(f"top {d['p']} components; two random sets overlap {d['random_expectation']:.3f} on average.")
    report.figure(plot.dice_matrix(d["variants"], title="task variants"))
    report.figure(plot.dice_matrix(d["support_sizes"], title="support-set sizes"))
    report.heading("Top components")
    summary = result.summary()
    report.table([[m, " ".join(v)] for m, v in summary["top_components"].items()],
                 header=["method", "top components, best first"])
    report.paragraph(f"Seconds: {json.dumps({k: round(v, 1) for k, v in result.timings.items()})}")
    return report
