"""The HTML page of an evaluation (``reasonlens eval``, ``reasonlens demo``)."""

from __future__ import annotations

from reasonlens.evaluate import EvalResult
from reasonlens.ontology.prompt import ANSWER_NOW
from reasonlens.plot import accuracy_by_hops
from reasonlens.reports.html import HtmlReport


def evaluation_report(result: EvalResult, n_chains: int = 6) -> HtmlReport:
    """An :class:`~reasonlens.reports.HtmlReport` with the accuracy tables and some decoded chains of ``result``."""
    m = result.metrics()
    rep = HtmlReport(f"reasonlens evaluation: {result.model}")
    rep.paragraph(f"{len(result.records)} questions decoded greedily"
                  + (f", {result.n_per_cell} per cell, generated with seed {result.seed}" if result.n_per_cell else "")
                  + (f", ontology sizes {result.sizes}" if result.sizes else "")
                  + (f", {result.shots} demonstration(s) before each question" if result.shots else "")
                  + ". Label accuracy: the final True/False matches; proof accuracy: the chain of thought is "
                  "the gold proof, step by step, as logical statements (PrOntoQA's proof accuracy; whether a "
                  "rule is written \"Every\", \"Each\" or in the plural does not count); verbatim: word for "
                  "word; valid proof: the independent checker accepts every step "
                  "and the label (a different but correct proof counts).")
    hops = sorted({h for cells in m["label_accuracy"].values() for h in cells}, key=lambda h: (len(h), h))
    for key in ("label_accuracy", "proof_accuracy", "valid_proof_accuracy", "verbatim_proof_accuracy"):
        rep.heading(key.replace("_", " ").capitalize())
        rep.table([[kind, *[cells.get(h) for h in hops]] for kind, cells in m[key].items()],
                  header=["ontology", *[f"{h} hops" if h.isdigit() else h for h in hops]])
    if any(h.isdigit() for h in hops):
        rep.figure(accuracy_by_hops(m))
    if m["prior_conflict_label_accuracy"]:
        rep.heading("Context against prior")
        rep.paragraph("Label accuracy on the questions whose in-context answer contradicts the background "
                      "taxonomy the model learned first: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in m["prior_conflict_label_accuracy"].items()) + ".")
    if m["first_errors"]:
        rep.heading("Where chains go wrong (first wrong decision, counts)")
        cats = sorted({c for v in m["first_errors"].values() for c in v})
        rep.table([[kind, *[v.get(c, 0) for c in cats]] for kind, v in m["first_errors"].items()],
                  header=["ontology", *cats])
    if m["rule_choice_accuracy"]:
        rep.heading("Which rule is restated next (teacher-forced)")
        rep.paragraph("Along the gold chain, before each restated rule, the model scores every context rule of "
                      "the current concept; it chooses right when the gold rule scores highest. Stop: the gold "
                      "rule is the concept's property rule (the concept carries the queried property); "
                      "continue: its \"is a\" rule. By forms: the first word of the gold rule vs the other "
                      "rule's (\"subject\": the rule starts with its subject, as plural rules do).")
        rep.table([[kind, v.get("stop"), v.get("continue")] for kind, v in m["rule_choice_accuracy"].items()],
                  header=["ontology", "stop", "continue"])
        cols = sorted({c for v in m["rule_choice_by_forms"].values() for c in v})
        rep.table([[kind, *[v.get(c) for c in cols]] for kind, v in m["rule_choice_by_forms"].items()],
                  header=["ontology", *cols])
    rep.heading("Answer now")
    now = m["answer_now"]
    if now["available"]:
        rep.paragraph(f"After each prefix of the gold chain and \"{ANSWER_NOW.strip()}\": label accuracy after the "
                      "full chain and after none of it (no CoT), and the probability on the two label tokens "
                      f"(minimum {now['label_mass_min']:.3f}, mean {now['label_mass_mean']:.3f} over "
                      f"{now['boundaries']} step boundaries).")
        for key in ("accuracy_full_chain", "accuracy_no_cot"):
            rep.table([[kind, *[cells.get(h) for h in hops]] for kind, cells in now[key].items()],
                      header=[key.replace("_", " "), *[f"{h} hops" if h.isdigit() else h for h in hops]])
    else:
        rep.paragraph(f"Not measured: {now['reason']}.")
    if m["closed_book_accuracy"] is not None:
        rep.heading("Closed-book accuracy (background facts, no context)")
        rep.paragraph(f"{m['closed_book_accuracy']:.3f} over {len(result.closed_book)} questions.")
    rep.heading("Decoded chains")
    wrong = [r for r in result.records if not r.proof_exact]
    right = [r for r in result.records if r.proof_exact]
    for r in (right[: n_chains // 2] + wrong[: n_chains - min(len(right), n_chains // 2)]):
        verdict = "exact proof" if r.proof_exact else ("right label, other proof" if r.label_correct else "wrong")
        rep.paragraph(f"<b>{r.kind}, {r.hops} hops</b> — <span class='{'ok' if r.proof_exact else 'bad'}'>"
                      f"{verdict}</span>", raw_html=True)
        rep.code(f"{r.prompt}\n\nmodel: {r.output}\ngold:  {r.gold}")
    return rep
