"""The HTML page of the step-importance study (``reasonlens run step-importance``)."""

from __future__ import annotations

import json

from reasonlens import plot
from reasonlens.importance.study import StepImportanceResult
from reasonlens.reports.html import HtmlReport


def step_importance_report(result: StepImportanceResult):
    """One self-contained HTML page: the tables and figures of the study."""

    s = result.summary()
    c = result.config
    report = HtmlReport(f"Step importance: {result.model}")
    report.paragraph(
        f"{c.n_per_cell} questions per cell ({', '.join(c.kinds)}; {', '.join(map(str, c.hops))} hops), "
        f"{c.source} chains with a redundant step at each hop boundary with probability {c.redundant_step_p}. "
        f"Sufficiency: {c.labels.scoring.mode} readout of the two labels right after the kept steps, tau = "
        f"{c.labels.scoring.tau}; influence: {c.labels.influence}. Probes: {c.probe.arch}, {c.probe.epochs} epochs, "
        f"seeds {list(c.probe.seeds)}; accuracies are on balanced classes (chance 0.5) and held out (the epoch is "
        "chosen on a validation slice of the training split); the paper's protocol (best test accuracy over "
        "epochs, optimistic) is in the last column.")
    report.heading("Removability labels")
    report.table([[k, v] for k, v in s["filter_counts"].items()], header=["chains left after", "count"])
    gt = s["labels_vs_ground_truth"]
    if gt is None:
        report.paragraph("No chain passed the filters, so no step is labelled; label more chains (n_per_cell).")
    else:
        records = result.labels.records()
        report.paragraph(
            f"{sum(r['label'] == 1 for r in records)} removable and {sum(r['label'] == 0 for r in records)} important "
            f"steps. Against the generator's redundant steps: precision {gt['precision']:.3f}, recall "
            f"{gt['recall']:.3f} ({gt['n_removable']} removable, {gt['n_redundant']} redundant in the prefixes). Core "
            f"size (|T*| / |prefix|): activation-based {s['core_size']['activation']:.3f}, random greedy "
            f"{s['core_size']['random']:.3f}.")
    first = max((cl for cl in result.labels.chains if cl.influence is not None), key=lambda cl: cl.prefix_len,
                default=None)
    if first is not None:
        report.figure(plot.influence_heatmap(first.influence, [first.chain.steps[i] for i in first.prefix]))
    for source, reason in result.skipped.items():
        report.paragraph(f"No probes on the {source} labels: {reason}.")
    for source, suite in result.suites.items():
        title = {"removability": "the removability labels", "generator": "the generator's labels (redundant = "
                 "removable, proof steps = important)"}[source]
        report.heading(f"Probes on {title}")
        summary = suite.summary()
        report.paragraph(f"{summary['n_steps']['removable']} removable and {summary['n_steps']['important']} "
                         "important steps.")
        report.table([[name, r.held_out_accuracy, r.held_out_std, r.best_epoch_accuracy]
                      for name, r in suite.probes.items()],
                     header=["probe", "held-out accuracy", "std over seeds", "best over epochs (paper)"])
        bands = {("all layers" if k == "context" else k): v for k, v in summary["probe_accuracy"].items()
                 if k in ("context", "tfidf", "surface_no_role", "random_init")}
        report.figure(plot.probe_accuracy_by_layer(suite.per_layer, bands, title=f"single-layer linear probes, {source}"
                                                                                 " labels"))
        report.table([[k, v] for k, v in sorted(suite.surface_correlation.items(), key=lambda kv: -kv[1])],
                     header=["surface feature", "|r| with the context probe's predictions"])
        if summary["cross_model"]:
            cm = summary["cross_model"]
            report.paragraph(
                f"Cross-model: the chains and labels, probed on {result.second_model}'s activations: accuracy "
                f"{cm['accuracy']:.3f} ({result.model}: {cm['accuracy_a']:.3f}, random init: "
                f"{cm['random_init_accuracy']:.3f}); agreement with {result.model}'s probe {cm['agreement']:.3f} "
                f"(random init: {cm['random_init_agreement']:.3f}) on {cm['n_test']} test steps.")
            report.figure(plot.agreement_matrix(cm["matrix"], title=f"probe agreement, {source} labels"))
        report.paragraph("Chains shaded by the context probe's P(removable) (every step: the probe reads unlabelled "
                         "steps too), underlined by their label:")
        labels: dict[tuple[int, int], int] = {(c, i): label for c, i, label in suite.steps.items}
        for c, (chain, probability) in enumerate(zip(suite.steps.chains[:4], suite.removable_probability)):
            report.paragraph(plot.chain_importance(chain.steps, probability, [labels.get((c, i)) for i in range(len(chain))],
                                                   legend=c == 0), raw_html=True)
    report.paragraph(f"Seconds: {json.dumps({k: round(v, 1) for k, v in result.timings.items()})}")
    return report
