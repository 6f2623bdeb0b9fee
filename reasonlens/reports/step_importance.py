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
    scoring = c.labels.scoring
    report.paragraph(
        f"{c.n_per_cell} questions per cell ({', '.join(c.kinds)}; {', '.join(map(str, c.hops))} hops): the model's "
        f"{c.source} chains are labelled and probed. {c.validation_per_cell} more per cell, gold chains with a "
        f"redundant step at each hop boundary with probability {c.redundant_step_p}, check the labels against the "
        f"generator's ground truth. Sufficiency: {scoring.mode}, {scoring.k_samples} answers at temperature "
        f"{scoring.temperature} (top-p {scoring.top_p}) over the full vocabulary after {scoring.suffix!r}; "
        f"attainability from whole-string perplexities; tau = {scoring.tau}; necessity: at most "
        f"{scoring.necessity_max_correct} of {scoring.k_samples} right without the chain; shortcut steps: "
        f"{'sufficient alone or ' if c.labels.shortcut_alone else ''}stating the answer; influence: "
        f"{c.labels.influence}. Probes: {c.probe.arch}, {c.probe.epochs} epochs, seeds {list(c.probe.seeds)}, split by "
        "chain; balanced accuracy (chance 0.5), held out (the epoch chosen on a validation slice of the training "
        "chains), with 95% bootstrap intervals over test chains; the paper's protocol (best test accuracy over "
        "epochs, optimistic) is in the last column.")
    report.heading("Removability labels")
    v = s["validation"]
    report.table([[k, s["filter_counts"].get(k), v["filter_counts"].get(k), v["paper_config_filter_counts"].get(k)]
                  for k in v["paper_config_filter_counts"]],
                 header=["chains left after", f"{c.source} chains", "validation (gold) chains",
                         "validation, the paper code's exact filters"])
    records = result.labels.records()
    report.paragraph(f"{sum(r['label'] == 1 for r in records)} removable and {sum(r['label'] == 0 for r in records)} "
                     f"important steps on the {c.source} chains.")
    gt = s["labels_vs_ground_truth"]
    if gt is not None:
        report.paragraph(
            f"Validation against the generator's redundant steps: precision {gt['precision']:.3f} "
            f"[{gt['precision_ci95'][0]:.3f}, {gt['precision_ci95'][1]:.3f}], recall {gt['recall']:.3f} "
            f"[{gt['recall_ci95'][0]:.3f}, {gt['recall_ci95'][1]:.3f}] ({gt['n_removable']} removable, "
            f"{gt['n_redundant']} redundant in the prefixes). Where the redundant steps ended: "
            + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in gt["redundant_fate"].items()) + ".")
    oracle = v["oracle_ranking"]
    if oracle is not None:
        report.paragraph(
            f"With a perfect ranking (the oracle: redundant steps dropped first) the same scores give precision "
            f"{oracle['precision']:.3f}, recall {oracle['recall']:.3f}: the ceiling the scores set.")
    if s["core_size"] is not None:
        cs = s["core_size"]
        report.paragraph(
            f"Core size (|T*| / |prefix|) on {cs['n_chains']} chains: activation-based {cs['activation']:.3f}, random "
            f"greedy {cs['random']:.3f}; difference {cs['difference']:+.3f} [{cs['ci95'][0]:+.3f}, "
            f"{cs['ci95'][1]:+.3f}], p = {cs['p_value']:.2g}.")
    first = max((cl for cl in result.labels.chains if cl.influence is not None), key=lambda cl: cl.prefix_len,
                default=None)
    if first is not None:
        report.figure(plot.influence_heatmap(first.influence, [first.chain.steps[i] for i in first.prefix]
                                             + [f"{scoring.suffix.strip()} ... (answer)"]))
    for source, reason in result.skipped.items():
        report.paragraph(f"No probes on the {source} labels: {reason}.")
    for source, suite in result.suites.items():
        title = {"removability": "the removability labels", "generator": "the generator's labels (redundant = "
                 "removable, proof steps = important)"}[source]
        report.heading(f"Probes on {title}")
        summary = suite.summary()
        report.paragraph(f"{summary['n_steps']['removable']} removable and {summary['n_steps']['important']} "
                         "important steps.")
        report.table([[name, r.held_out_accuracy, *r.interval(), r.best_epoch_accuracy]
                      for name, r in suite.probes.items()],
                     header=["probe", "held-out accuracy", "95% low", "95% high", "best over epochs (paper)"])
        report.table([[name, *cmp["accuracy"], cmp["difference"], *cmp["difference_ci95"], cmp["p_value"]]
                      for name, cmp in summary["comparisons"].items()],
                     header=["comparison", "context", "control", "difference", "95% low", "95% high",
                             "permutation p"])
        report.paragraph(f"Test steps per seed: {summary['n_test_steps']} (chains: {summary['n_test_chains']}).")
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
