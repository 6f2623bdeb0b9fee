"""Accuracy of a model on PrOntoQA questions: label accuracy, exact-proof accuracy and closed-book
accuracy on the background facts, from greedy decoding (``reasonlens eval``); and, teacher-forced along the
gold chain, which rule the model would restate next (:func:`rule_choices`)."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.background import closed_book_prompt, closed_book_questions
from reasonlens.ontology.checker import check_chain, infer_concepts, parse_sentence
from reasonlens.ontology.generator import MAX_HOPS, SIZE_OPTIONS, generate
from reasonlens.ontology.prompt import ANSWER_NOW, format_prompt
from reasonlens.ontology.realize import choose_form
from reasonlens.ontology.sentences import split_sentences
from reasonlens.ontology.types import ONTOLOGY_KINDS, Example, Fact, Sentence
from reasonlens.results import RESULTS_FILE, ConfigDict, read_results, result_part, write_results
from reasonlens.validation import load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class EvalConfig(ConfigDict):
    """Held-out evaluation: ``n_per_cell`` fresh questions for every (ontology kind, hops) cell.

    ``seed`` must differ from the seed the model's training questions came from (checked).
    """

    n_per_cell: int = 100
    seed: int = 7
    kinds: tuple[str, ...] = ONTOLOGY_KINDS
    hops: tuple[int, ...] = tuple(range(1, MAX_HOPS + 1))
    batch_size: int = 64
    closed_book: bool = True
    shots: int = 0  # solved demonstrations before each question (same kind and hops, another seed)
    # Generator knobs of the ontology sizes (e.g. reasonlens.ontology.generator.V1_SIZES, real PrOntoQA v1's);
    # empty: the generator's defaults.
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_count("shots", self.shots, 0)
        _check_count("n_per_cell", self.n_per_cell, 1)
        _check_count("batch_size", self.batch_size, 1)
        _check_count("seed", self.seed, None)
        unknown = set(self.kinds) - set(ONTOLOGY_KINDS)
        if unknown or not self.kinds:
            raise ReasonlensError(f"unknown ontology kind(s) {sorted(unknown)}; choose from {ONTOLOGY_KINDS}" if unknown
                                  else f"kinds is empty; choose one or more of {ONTOLOGY_KINDS}")
        unknown_sizes = set(self.sizes) - set(SIZE_OPTIONS)
        if unknown_sizes:
            raise ReasonlensError(f"sizes has unknown ontology-size option(s) {sorted(unknown_sizes)}; use "
                                  f"{', '.join(SIZE_OPTIONS)}")
        bad = [h for h in self.hops if not (isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_HOPS)]
        if bad or not self.hops:
            raise ReasonlensError(f"hops must be one or more integers in 1..{MAX_HOPS}, got {list(self.hops)}")


def _check_count(name: str, value: object, least: int | None) -> None:
    """A ReasonlensError unless ``value`` is a whole number (``least`` or more)."""
    if not isinstance(value, int) or isinstance(value, bool) or (least is not None and value < least):
        raise ReasonlensError(f"{name} must be a whole number{f' >= {least}' if least is not None else ''}, "
                              f"got {value!r}")


@dataclass
class Record:
    """One decoded question."""

    kind: str
    hops: int | None
    prompt: str
    gold: str
    output: str
    label_correct: bool
    proof_exact: bool  # the gold proof, step by step, as logical statements
    proof_verbatim: bool = False  # the gold proof word for word
    proof_valid: bool = False  # every step valid and the right label, by the independent checker
    prior_agrees: bool | None = None  # does the pretraining prior give the same answer as the context?
    first_error: str | None = None  # the decision where the output first leaves the gold chain


@dataclass
class RuleChoice:
    """One teacher-forced choice of which context rule to restate next: the gold chain up to a restated rule,
    then every rule of the current concept scored by the model's log-probability."""

    kind: str
    hops: int | None
    decision: str  # "stop" (the gold rule is the concept's property rule) or "continue" (its "is a" rule)
    forms: str  # first word of the gold rule vs the others': "every vs subject" ("subject": the rule starts with it)
    correct: bool  # the gold rule has the highest log-probability
    margin: float  # log-probability of the gold rule minus the best other rule's


@dataclass
class AnswerNow:
    """The answer-now readout of one question: after the first ``j`` steps of its gold chain (``j`` = 0 .. all)
    and :data:`~reasonlens.ontology.prompt.ANSWER_NOW`, ``mass[j]`` is the probability of the two label tokens
    and ``correct[j]`` whether the likelier of them is the gold label."""

    kind: str
    hops: int | None
    label: bool
    mass: list[float]
    correct: list[bool]


def _form(text: str) -> str:
    word = text.split()[0].lower()
    return word if word in ("every", "each") else "subject"


def _step_category(step) -> str:
    return f"{step.role} ({step.fact.kind})" if step.role in ("rule_copy", "derived_fact") else step.role


def _produced_facts(example: Example, output: str) -> list[Fact | None]:
    """Logical forms of the sentences of a decoded chain (None where a sentence does not parse)."""
    concepts = infer_concepts(s.text for s in example.context)
    facts: list[Fact | None] = []
    for sentence in split_sentences(output):
        if not sentence.endswith("."):
            continue  # the answer label or a cut-off step
        try:
            facts.append(parse_sentence(sentence, concepts))
        except ReasonlensError:
            facts.append(None)
    return facts


def first_error(example: Example, output: str) -> str | None:
    """Which decision a decoded ``output`` gets wrong first, comparing its steps with the gold chain as logical
    statements (the surface form, "Every" or "Each", does not count): the gold step's role
    (``"rule_copy (property)"``, ...), prefixed ``"polarity: "`` when the step differs only by a "not";
    ``"extra step"``; ``"label"`` when the proof is right but the answer is not; ``None`` (no error).

    >>> from reasonlens.ontology import generate
    >>> ex = generate(1, hops=1, seed=0)[0]
    >>> first_error(ex, ex.cot_text + " " + ex.answer) is None
    True
    """
    produced = _produced_facts(example, output)
    for i, step in enumerate(example.cot):
        if i >= len(produced):
            return _step_category(step)
        if produced[i] != step.fact:
            flipped = produced[i] is not None and replace(produced[i], negated=not produced[i].negated) == step.fact
            return ("polarity: " if flipped else "") + _step_category(step)
    if len(produced) > len(example.cot):
        return "extra step"
    return None if split_answer(output)[1] == example.answer.lower() else "label"


@dataclass
class EvalResult:
    """Per-question records and the metrics over them; ``save`` writes ``results.json``, ``metrics.json`` and the
    records."""

    model: str
    n_per_cell: int | None
    seed: int | None
    records: list[Record]
    closed_book: list[tuple[str, bool]] = field(default_factory=list)  # (prompt, answered correctly)
    rule_choices: list[RuleChoice] = field(default_factory=list)
    answer_now: list[AnswerNow] = field(default_factory=list)
    answer_now_unavailable: str | None = None  # why the readout was not measured
    shots: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # the generator's ontology-size knobs (empty: defaults)

    def metrics(self) -> dict[str, Any]:
        """``{"model", "n_per_cell", "seed", "label_accuracy": {kind: {hops: acc}}, "proof_accuracy": ...,
        "closed_book_accuracy"}``; records without a known kind/hops are keyed ``"data"``."""
        label: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        proof: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        valid: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        verbatim: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for r in self.records:
            kind = r.kind if r.kind in ONTOLOGY_KINDS else "data"
            hops = str(r.hops) if r.hops is not None else "data"
            label[kind][hops].append(r.label_correct)
            proof[kind][hops].append(r.proof_exact)
            valid[kind][hops].append(r.proof_valid)
            verbatim[kind][hops].append(r.proof_verbatim)

        def mean(table):
            return {k: {h: sum(v) / len(v) for h, v in sorted(cells.items())} for k, cells in table.items()}

        out: dict[str, Any] = {"model": self.model, "n_per_cell": self.n_per_cell, "seed": self.seed,
                               "shots": self.shots, "sizes": self.sizes,
                               "label_accuracy": mean(label), "proof_accuracy": mean(proof),
                               "valid_proof_accuracy": mean(valid), "verbatim_proof_accuracy": mean(verbatim)}
        errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.records:
            if r.first_error is not None:
                errors[r.kind if r.kind in ONTOLOGY_KINDS else "data"][r.first_error] += 1
        conflict: dict[str, list[bool]] = defaultdict(list)
        for r in self.records:
            if r.prior_agrees is False:
                conflict[r.kind].append(r.label_correct)
        out["prior_conflict_label_accuracy"] = {k: sum(v) / len(v) for k, v in conflict.items()}
        out["first_errors"] = {k: dict(sorted(v.items())) for k, v in errors.items()}
        out["closed_book_accuracy"] = (sum(ok for _, ok in self.closed_book) / len(self.closed_book)
                                       if self.closed_book else None)
        decisions: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        forms: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for c in self.rule_choices:
            kind = c.kind if c.kind in ONTOLOGY_KINDS else "data"
            decisions[kind][c.decision].append(c.correct)
            forms[kind][f"{c.decision}: {c.forms}"].append(c.correct)
        out["rule_choice_accuracy"] = mean(decisions)
        out["rule_choice_by_forms"] = mean(forms)
        out["answer_now"] = self._answer_now_metrics()
        return out

    def _answer_now_metrics(self) -> dict[str, Any]:
        """Label accuracy of the answer-now readout after the full gold chain and after none of it (no CoT), per
        kind and hops, and the mass on the two label tokens at every step boundary (its minimum and mean)."""
        if not self.answer_now:
            return {"suffix": ANSWER_NOW, "available": False, "reason": self.answer_now_unavailable}
        full: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        empty: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for r in self.answer_now:
            kind, hops = (r.kind if r.kind in ONTOLOGY_KINDS else "data"), (str(r.hops) if r.hops else "data")
            full[kind][hops].append(r.correct[-1])
            empty[kind][hops].append(r.correct[0])
        masses = [m for r in self.answer_now for m in r.mass]
        return {"suffix": ANSWER_NOW, "available": True, "n": len(self.answer_now),
                "accuracy_full_chain": {k: {h: sum(v) / len(v) for h, v in sorted(c.items())} for k, c in full.items()},
                "accuracy_no_cot": {k: {h: sum(v) / len(v) for h, v in sorted(c.items())} for k, c in empty.items()},
                "label_mass_min": min(masses), "label_mass_mean": sum(masses) / len(masses),
                "boundaries": len(masses)}

    def summary(self) -> dict[str, Any]:
        """``results.json``: the :meth:`metrics`."""
        return self.metrics()

    def save(self, out_dir: str | Path) -> Path:
        """Write ``results.json`` (:func:`~reasonlens.results.write_results`), the same metrics as ``metrics.json``
        (the file ``reasonlens eval`` has always written), ``records.jsonl``, ``closed_book.json``,
        ``rule_choices.json`` and ``answer_now.json`` into ``out_dir``."""
        out = write_results(self, out_dir)
        (out / "metrics.json").write_text(json.dumps(self.metrics(), indent=2))
        with open(out / "records.jsonl", "w") as f:
            for r in self.records:
                f.write(json.dumps(asdict(r)) + "\n")
        (out / "closed_book.json").write_text(json.dumps(self.closed_book))
        (out / "rule_choices.json").write_text(json.dumps([asdict(c) for c in self.rule_choices]))
        (out / "answer_now.json").write_text(json.dumps({"unavailable": self.answer_now_unavailable,
                                                         "records": [asdict(a) for a in self.answer_now]}))
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> "EvalResult":
        """Read a folder written by :meth:`save` (or, without ``results.json``, by a reasonlens before it)."""
        keys = ("model", "n_per_cell", "seed")
        out = Path(out_dir)
        if not (out / RESULTS_FILE).exists() and (out / "metrics.json").is_file():
            m = load_saved(out / "metrics.json", "EvalResult", keys, fmt="json")
        else:
            m = read_results(out_dir, "EvalResult", keys)
        records = [Record(**json.loads(line))
                   for line in result_part(out, "records.jsonl", "EvalResult").read_text().splitlines()]
        closed = [tuple(q) for q in json.loads(result_part(out, "closed_book.json", "EvalResult").read_text())]
        saved = out / "rule_choices.json"  # absent in results saved before reasonlens measured rule choices
        choices = [RuleChoice(**c) for c in json.loads(saved.read_text())] if saved.exists() else []
        now = out / "answer_now.json"  # absent in results saved before reasonlens measured the readout
        readout = json.loads(now.read_text()) if now.exists() else {"unavailable": None, "records": []}
        return cls(model=m["model"], n_per_cell=m["n_per_cell"], seed=m["seed"], records=records, closed_book=closed,
                   rule_choices=choices, answer_now=[AnswerNow(**a) for a in readout["records"]],
                   answer_now_unavailable=readout["unavailable"], shots=m.get("shots", 0), sizes=m.get("sizes", {}))


def normalize(text: str) -> str:
    """Case- and spacing-insensitive form used to compare chains: ``'Polly is a cat.' -> 'polly is a cat .'``"""
    return " ".join(re.sub(r"([.:,])", r" \1 ", text.lower()).split())


def split_answer(output: str) -> tuple[str, str | None]:
    words = normalize(output).split()
    if words and words[-1] in ("true", "false"):
        return " ".join(words[:-1]), words[-1]
    return " ".join(words), None


def shot_demonstrations(example: Example, shots: int) -> list[Example]:
    from reasonlens.ontology.io import demonstrations

    demos = demonstrations(example)
    if len(demos) < shots:
        raise ReasonlensError(f"{shots} demonstrations asked for, but a question carries only {len(demos)}; lower "
                              "shots (imported PrOntoQA files carry their own in-context examples)")
    return demos[:shots]


def evaluate_examples(model: TransformerBridge, examples: list[Example], *, shots: int = 0, batch_size: int = 64,
                      progress: bool = False) -> list[Record]:
    """Greedy-decode each example's prompt, preceded by the first ``shots`` demonstrations it carries
    (``meta["demonstrations"]``), and score its label and proof."""
    from reasonlens.generation import GenerationConfig
    from reasonlens.generation import generate as decode

    if not examples:
        raise ReasonlensError("no examples to evaluate: the dataset is empty")
    _check_count("shots", shots, 0)
    _check_count("batch_size", batch_size, 1)
    prompts = [format_prompt(e, shot_demonstrations(e, shots) if shots else []) for e in examples]
    tok = model.tokenizer
    gold_len = max(len(tok(" " + e.cot_text + " " + e.answer, add_special_tokens=False)["input_ids"])
                   for e in examples)
    gen = decode(model, prompts, GenerationConfig(max_new_tokens=gold_len + 16, temperature=0.0,
                                                  batch_size=batch_size), progress=progress)
    records = []
    for e, prompt, text in zip(examples, prompts, gen.texts):
        cot, answer = split_answer(text)
        error = first_error(e, text)
        records.append(Record(kind=e.kind, hops=e.hops, prompt=prompt, gold=f"{e.cot_text} {e.answer}",
                              output=text.strip(), label_correct=answer == e.answer.lower(),
                              proof_exact=error in (None, "label"),
                              proof_verbatim=answer is not None and cot == normalize(e.cot_text),
                              proof_valid=check_chain(e.question, e.query_text, text).ok,
                              prior_agrees=None if e.meta.get("prior_label") is None else e.meta["prior_label"] == e.label,
                              first_error=error))
    return records


def answer_now_problem(model: TransformerBridge) -> str | None:
    """Why ``model`` cannot be read out with :data:`~reasonlens.ontology.prompt.ANSWER_NOW` (its tokenizer
    lacks a word of the suffix or the labels), or ``None`` when it can."""
    from reasonlens.model import require_tokenizer

    tok = require_tokenizer(model)
    if tok.unk_token_id is None:
        return None
    unknown = [w for w in (ANSWER_NOW + " True False").split()
               if tok.unk_token_id in tok(" " + w, add_special_tokens=False)["input_ids"]]
    return (f"the model's tokenizer has no token for {unknown} of the answer-now suffix {ANSWER_NOW.strip()!r} and "
            "the labels (the reference models before v2 were not trained to answer mid-chain)") if unknown else None


def answer_now(model: TransformerBridge, examples: list[Example], *, shots: int = 0, batch_size: int = 64,
               progress: bool = False) -> list[AnswerNow]:
    """The answer-now readout of every example: after each prefix of its gold chain (none of it .. all of it),
    then :data:`~reasonlens.ontology.prompt.ANSWER_NOW`, the next-token probabilities of the two labels (one
    forward per prefix, ``batch_size`` at a time). A tokenizer that cannot write the suffix is an error
    (:func:`answer_now_problem`)."""
    import torch
    from tqdm.auto import tqdm

    from reasonlens.model import context_length
    from reasonlens.patching.engine import run_padded
    from reasonlens.runtime import left_pad, pad_token_id

    if not examples:
        raise ReasonlensError("no examples to read out: the dataset is empty")
    _check_count("shots", shots, 0)
    _check_count("batch_size", batch_size, 1)
    problem = answer_now_problem(model)
    if problem is not None:
        raise ReasonlensError(f"cannot measure the answer-now readout: {problem}")
    rows, owner = [], []
    for i, e in enumerate(examples):
        prompt = format_prompt(e, shot_demonstrations(e, shots) if shots else [])
        for j in range(len(e.cot) + 1):
            rows.append(model.to_tokens(prompt + "".join(" " + s.text for s in e.cot[:j]) + ANSWER_NOW,
                                        truncate=False)[0].tolist())
            owner.append(i)
    longest = max(len(r) for r in rows)
    if longest > context_length(model):
        raise ReasonlensError(f"an answer-now prefix has {longest} tokens, more than the model's context length "
                              f"{context_length(model)}; use fewer demonstrations")
    labels = [model.to_tokens(rows_text, prepend_bos=False)[0, 0].item() for rows_text in (" True", " False")]
    if labels[0] == labels[1]:
        raise ReasonlensError("' True' and ' False' start with the same token: the readout needs distinct label tokens")
    probs = []
    for start in tqdm(range(0, len(rows), batch_size), desc="answer now", disable=not progress):
        ids, mask = left_pad(rows[start:start + batch_size], pad_token_id(model))
        probs.append(torch.softmax(run_padded(model, ids, mask, last_only=True)[:, -1].float(), -1)[:, labels].cpu())
    p = torch.cat(probs)
    out = []
    for i, e in enumerate(examples):
        mine = p[[k for k, o in enumerate(owner) if o == i]]
        out.append(AnswerNow(kind=e.kind, hops=e.hops, label=e.label, mass=mine.sum(-1).tolist(),
                             correct=((mine[:, 0] > mine[:, 1]) == e.label).tolist()))
    return out


def rule_choice_points(example: Example) -> list[tuple[int, Sentence, list[str]]]:
    """The choices :func:`rule_choices` scores: ``(i, step, others)`` for each restated rule ``example.cot[i]``
    (redundant steps aside) whose subject has other context rules, ``others`` their texts.

    >>> from reasonlens.ontology import generate
    >>> [(i, len(others)) for i, _, others in rule_choice_points(generate(1, hops=2, extra_concepts=0, seed=5)[0])]
    [(1, 1)]
    """
    points = []
    for i, step in enumerate(example.cot):
        if step.role != "rule_copy":
            continue
        others = [s.text for s in example.context
                  if s.fact.universal and s.fact.subject == step.fact.subject and s.fact != step.fact]
        if others:
            points.append((i, step, others))
    return points


def rule_choices(model: TransformerBridge, examples: list[Example], *, shots: int = 0, batch_size: int = 64,
                 progress: bool = False) -> list[RuleChoice]:
    """Teacher-forced: at each rule the gold chain restates (redundant steps aside), does the model give that rule
    a higher log-probability than the current concept's other context rules (:func:`rule_choice_points`)? Concepts
    with a single rule offer no choice and are skipped. This is the decision behind most wrong chains (see :func:`first_error`).

    Per question the prompt runs once (its keys and values cached); the gold chain is one row after it, each
    other candidate rule one row (the gold steps before it, then the rule), up to ``batch_size`` rows per
    forward. Steps are tokenized one by one, each with its leading space, as the model writes them.

    >>> from reasonlens import load_model
    >>> from reasonlens.ontology import generate
    >>> choices = rule_choices(load_model("reasonlens-main"), generate(4, hops=2, seed=5))
    >>> sorted({c.decision for c in choices})
    ['continue', 'stop']
    """
    import torch
    from tqdm.auto import tqdm

    from reasonlens.model import context_length
    from reasonlens.runtime import KVPrefix, pad_token_id, run_continuations

    if batch_size < 1:
        raise ReasonlensError(f"batch_size must be at least 1, got {batch_size!r}")
    tok = model.tokenizer
    pad, n_ctx = pad_token_id(model), context_length(model)
    out: list[RuleChoice] = []
    for e in tqdm(examples, desc="rule choice", unit="question", disable=not progress):
        points = rule_choice_points(e)
        if not points:
            continue
        prompt = model.to_tokens(format_prompt(e, shot_demonstrations(e, shots) if shots else []),
                                 truncate=False)[0].tolist()
        steps = [tok(" " + s.text, add_special_tokens=False)["input_ids"] for s in e.cot]
        prefix = KVPrefix.of(model, prompt[:-1])
        lead = prompt[-1:] if prefix is not None else prompt
        before = [len(lead) + sum(map(len, steps[:i])) for i in range(len(steps) + 1)]
        rows = [lead + [t for ids in steps for t in ids]]
        spans: list[list[tuple[int, int, int]]] = []  # per point: (row, start, length) of each candidate, gold first
        for i, _, others in points:
            spans.append([(0, before[i], len(steps[i]))])
            for text in others:
                cand = tok(" " + text, add_special_tokens=False)["input_ids"]
                spans[-1].append((len(rows), before[i], len(cand)))
                rows.append(rows[0][:before[i]] + cand)
        longest = len(prompt) - len(lead) + max(map(len, rows))
        if longest > n_ctx:
            raise ReasonlensError(f"a question with its chain is {longest} tokens but the model attends over {n_ctx}; "
                                  "use shorter questions or a model with a longer context")
        logp = []
        for k in range(0, len(rows), batch_size):
            with torch.no_grad():
                logp += list(run_continuations(model, prefix, rows[k:k + batch_size], pad).double().log_softmax(-1))

        def score(row: int, start: int, n: int) -> float:
            target = torch.tensor(rows[row][start:start + n], device=logp[row].device)
            return logp[row][start - 1:start - 1 + n].gather(-1, target[:, None]).sum().item()

        for (_, step, others), cands in zip(points, spans):
            gold, *rest = [score(*c) for c in cands]
            forms = f"{_form(step.text)} vs {'/'.join(sorted({_form(t) for t in others}))}"
            out.append(RuleChoice(kind=e.kind, hops=e.hops, decision="stop" if step.fact.kind == "property" else
                                  "continue", forms=forms, correct=gold > max(rest), margin=gold - max(rest)))
    return out


def closed_book_accuracy(model: TransformerBridge, *, seed: int = 0, batch_size: int = 64, progress: bool = False
                         ) -> list[tuple[str, bool]]:
    """Answer every closed-book question about the background taxonomy (no context given)."""
    from reasonlens.generation import GenerationConfig
    from reasonlens.generation import generate as decode

    rng = random.Random(seed)
    questions = [(closed_book_prompt(f, choose_form("prontoqa", rng)), truth) for f, truth in closed_book_questions()]
    gen = decode(model, [q for q, _ in questions], GenerationConfig(max_new_tokens=3, temperature=0.0,
                                                                   batch_size=batch_size), progress=progress)
    return [(q, split_answer(text)[1] == ("true" if truth else "false")) for (q, truth), text in
            zip(questions, gen.texts)]


def evaluate(model: TransformerBridge, config: EvalConfig = EvalConfig(), *, model_name: str = "model",
             train_question_seeds: tuple[int, int] | None = None,
             progress: bool = False) -> EvalResult:
    """Evaluate on freshly generated held-out questions, ``config.n_per_cell`` per (kind, hops) cell.

    >>> from reasonlens import load_model
    >>> result = evaluate(load_model("reasonlens-main"), EvalConfig(n_per_cell=2, hops=(1,)))  # doctest: +SKIP
    >>> sorted(result.metrics()["label_accuracy"])  # doctest: +SKIP
    ['false', 'fictional', 'true']
    """
    if train_question_seeds is not None and train_question_seeds[0] <= config.seed < train_question_seeds[1]:
        lo, hi = train_question_seeds
        raise ReasonlensError(f"seed {config.seed} generated some of this model's training questions (seeds {lo} to "
                              f"{hi - 1}); pick a seed outside that range for held-out evaluation")
    examples: list[Example] = []
    for kind in config.kinds:
        for hops in config.hops:
            cell = generate(config.n_per_cell, kind=kind, hops=hops, ordering=("postorder", "preorder", "random"),
                            seed=config.seed, **config.sizes)
            if config.shots:
                demos = [d.to_dict() for d in generate(config.shots, kind=kind, hops=hops, seed=config.seed + 1,
                                                       **config.sizes)]
                for e in cell:
                    e.meta["demonstrations"] = demos
            examples += cell
    result = evaluate_dataset(model, examples, shots=config.shots, batch_size=config.batch_size,
                              model_name=model_name, progress=progress)
    closed = closed_book_accuracy(model, seed=config.seed, batch_size=config.batch_size,
                                  progress=progress) if config.closed_book else []
    return replace(result, n_per_cell=config.n_per_cell, seed=config.seed, closed_book=closed,
                   sizes=dict(config.sizes))


def evaluate_dataset(model: TransformerBridge, examples: list[Example], *, shots: int = 0, batch_size: int = 64,
                     model_name: str = "model", progress: bool = False) -> EvalResult:
    """Everything :func:`evaluate` measures on given questions (an imported file, say) except the closed-book
    accuracy: greedy decoding scored against the gold chains, the teacher-forced rule choices and the answer-now
    readout (unavailable, with the reason, for a vocabulary without the suffix's words).

    >>> from reasonlens import load_model
    >>> from reasonlens.ontology import generate
    >>> result = evaluate_dataset(load_model("reasonlens-main"), generate(2, hops=1, seed=3))  # doctest: +SKIP
    """
    records = evaluate_examples(model, examples, shots=shots, batch_size=batch_size, progress=progress)
    choices = rule_choices(model, examples, shots=shots, batch_size=batch_size, progress=progress)
    problem = answer_now_problem(model)
    readout = [] if problem else answer_now(model, examples, shots=shots, batch_size=batch_size, progress=progress)
    return EvalResult(model=model_name, n_per_cell=None, seed=None, records=records, rule_choices=choices,
                      answer_now=readout, answer_now_unavailable=problem, shots=shots)
