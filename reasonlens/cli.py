"""The reasonlens command line: generate data, train and evaluate reference models, list models, and run
the demo report.

Every command that writes checks its ``--out`` before any work, refuses to replace an existing file or a
non-empty folder unless ``--overwrite`` is given, and writes its results atomically (:mod:`reasonlens.output`).
Bad input, including bad arguments, ends with ``reasonlens: error: <message>`` on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, fields, replace
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.generator import MAX_CONCEPTS, SIZE_OPTIONS, V1_SIZES, GeneratorConfig
from reasonlens.ontology.prompt import ANSWER_NOW
from reasonlens.output import atomic_output, check_run_folder

if TYPE_CHECKING:  # the study configs' modules load torch: imported when a command needs them
    from reasonlens.attribution.study import IPGStudyConfig
    from reasonlens.evaluate import EvalConfig
    from reasonlens.importance.study import StepImportanceConfig
    from reasonlens.patching.mechanism import MechanismConfig
    from reasonlens.tour import TourConfig

EVAL_OUTPUT = "a folder of results (metrics.json, records, report.html)"
RECIPE_OUTPUT = "a folder of results (results.json, report.html, ...)"
OVERWRITE_HELP = ("replace the results in a non-empty --out (files there that no reasonlens run wrote are kept; "
                  "without this flag a non-empty --out is an error)")


class UsageError(Exception):
    """A bad command line: its message says which argument and what to do."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number, ``least`` or more."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {text!r}")
        return value

    parse.__name__ = f"count>={least}"
    return parse


def _probability(text: str) -> float:
    """An argparse type: a probability in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


class _Default:
    """An option's default: field ``name`` of the config dataclass ``config`` (``"module.Class"``) that the command
    builds, so that each default is written once, in its config. The config is imported only when the default is
    needed (the study configs' modules load torch): by :func:`_parse_args` for an option left out, and by ``--help``,
    whose ``%(default)s`` shows the value on a default config (a list as it is typed) and, for each of ``cases``
    (``{"for heads": {"component": "head"}}``), on a config with those fields. ``unset``: an option left out stays None,
    for a command that treats that case itself (a preset or a --data file applies); its help still shows the
    config's default."""

    def __init__(self, config: str, name: str, *, cases: dict[str, dict[str, Any]] | None = None,
                 unset: bool = False) -> None:
        self.config, self.name, self.cases, self.unset = config, name, cases or {}, unset

    def _class(self) -> type:
        module, name = self.config.rsplit(".", 1)
        return getattr(import_module(module), name)

    def resolve(self) -> Any:
        """The value of an option left out: the field's default (None with ``unset``)."""
        if self.unset:
            return None
        field = {f.name: f for f in fields(self._class())}[self.name]
        return field.default_factory() if field.default is MISSING else field.default

    def __str__(self) -> str:
        def show(changes: dict[str, Any]) -> str:
            value = getattr(self._class()(**changes), self.name)
            return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)

        return "; ".join([show({}), *(f"{case} {show(changes)}" for case, changes in self.cases.items())])


_GENERATOR = partial(_Default, "reasonlens.ontology.generator.GeneratorConfig")
_TRAIN = partial(_Default, "reasonlens.train.TrainConfig")
_EVAL = partial(_Default, "reasonlens.evaluate.EvalConfig")
_MECHANISM = partial(_Default, "reasonlens.patching.mechanism.MechanismConfig")
_IPG = partial(_Default, "reasonlens.attribution.study.IPGStudyConfig")
_STEP_IMPORTANCE = partial(_Default, "reasonlens.importance.study.StepImportanceConfig")
_TOUR = partial(_Default, "reasonlens.tour.TourConfig")


def _tuple(value: Any) -> Any:
    """A list option's value as the tuple a config takes (a default, a tuple, a string or None, as it is)."""
    return tuple(value) if isinstance(value, list) else value


def _generator_config(args: argparse.Namespace) -> GeneratorConfig:
    """The GeneratorConfig of ``reasonlens generate``: --v1-sizes' ontology sizes where no size option is given."""
    sizes = {k: getattr(args, k) for k in SIZE_OPTIONS if getattr(args, k) is not None}
    return GeneratorConfig(kind=_tuple(args.kind), hops=_tuple(args.hops), style=args.style,
                           false_mode=args.false_mode, redundant_step_p=args.redundant_step_p,
                           ordering=_tuple(args.ordering), seed=args.seed,
                           **({**V1_SIZES, **sizes} if args.v1_sizes else sizes))


def _cmd_generate(args: argparse.Namespace) -> None:
    from reasonlens.ontology import generate
    from reasonlens.ontology.io import save_jsonl, to_hf_dataset

    cfg = _generator_config(args)
    jsonl = Path(args.out).suffix == ".jsonl"
    with atomic_output(args.out, kind="file" if jsonl else "dir", overwrite=args.overwrite, command=args.command_line,
                       writes="a JSONL file" if jsonl else "a Hugging Face dataset folder (name --out X.jsonl for a "
                                                           "JSONL file)") as tmp:
        examples = generate(args.n, cfg)
        if jsonl:
            save_jsonl(examples, tmp)
        else:
            to_hf_dataset(examples).save_to_disk(str(tmp))
    print(f"wrote {len(examples)} examples to {args.out}")


def _training_device(device: str) -> str:
    """The device ``--device`` names; ``auto``: the GPU when torch sees one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise ReasonlensError(f"--device {device!r} is not a torch device ({e}); use auto, cpu or cuda") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise ReasonlensError(f"--device {device} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


def _cmd_train(args: argparse.Namespace) -> None:
    from reasonlens.zoo_build import STAGES, build_zoo, train_reference

    device = _training_device(args.device)
    stages = [f"stage{i}" for i in range(1, len(STAGES) + 1)]
    check_run_folder(args.out, resumable=["runs", "zoo"] if args.zoo else stages, overwrite=args.overwrite)
    print(f"training on {device}")
    if args.zoo:
        build_zoo(args.out, install=args.install, precision=args.precision, device=device)
    else:
        train_reference(args.out, seed=args.seed, progress=not args.quiet, precision=args.precision, device=device)
    print(f"training output in {args.out}")


def _eval_config(n: int | None, seed: int, batch_size: int, shots: int, v1_sizes: bool) -> EvalConfig:
    """The EvalConfig of ``reasonlens eval`` and ``demo`` on generated questions (``n`` per cell, None: the
    config's default)."""
    from reasonlens.evaluate import EvalConfig

    return EvalConfig(**({} if n is None else {"n_per_cell": n}), seed=seed, batch_size=batch_size, shots=shots,
                      sizes=dict(V1_SIZES) if v1_sizes else {})


def _eval(model_name: str, out: Path, n: int | None, seed: int, data: str | None, batch_size: int, shots: int = 0,
          allow_unknown_words: bool = False, v1_sizes: bool = False) -> dict:
    """Evaluate on generated questions (``n`` per cell, default EvalConfig's) or on the file ``data`` (its first
    ``n`` questions, default all; what was imported, left out and read as unknown words is the metrics'
    ``import``)."""
    from reasonlens.evaluate import evaluate, evaluate_dataset
    from reasonlens.model import context_length, load_model, model_info
    from reasonlens.ontology.io import prepare_for_model, read_dataset
    from reasonlens.reports import evaluation_report

    if data and v1_sizes:
        raise ReasonlensError("--v1-sizes sizes generated questions; a --data file brings its own ontologies, so "
                              "give one of the two")

    examples, imported = read_dataset(data, limit=n) if data else ([], None)
    model = load_model(model_name)
    info = model_info(model_name)
    if imported is not None:
        examples = prepare_for_model(examples, imported, model.tokenizer, n_ctx=context_length(model), shots=shots,
                                     allow_unknown_words=allow_unknown_words)
        print(imported.summary())
        result = evaluate_dataset(model, examples, shots=shots, batch_size=batch_size, model_name=model_name,
                                  progress=True)
    else:
        result = evaluate(model, _eval_config(n, seed, batch_size, shots, v1_sizes), model_name=model_name,
                          train_question_seeds=info.train_question_seeds if info else None, progress=True)
    result.save(out)
    evaluation_report(result).save(out / "report.html")
    metrics = result.metrics()
    if imported is not None:
        metrics["import"] = imported.to_dict()
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _print_table(metrics: dict) -> None:
    for key in ("label_accuracy", "proof_accuracy"):
        print(key)
        for kind, cells in metrics[key].items():
            print(f"  {kind:10s} " + "  ".join(f"{h}:{v:.3f}" for h, v in cells.items()))
    if metrics.get("closed_book_accuracy") is not None:
        print(f"closed_book_accuracy {metrics['closed_book_accuracy']:.3f}")
    print("rule_choice_accuracy (teacher-forced: which rule is restated next)")
    for kind, cells in metrics["rule_choice_accuracy"].items():
        print(f"  {kind:10s} " + "  ".join(f"{d}:{v:.3f}" for d, v in cells.items()))


def _cmd_eval(args: argparse.Namespace) -> None:
    out = Path(args.out)
    with atomic_output(out, overwrite=args.overwrite, command=args.command_line, writes=EVAL_OUTPUT) as tmp:
        metrics = _eval(args.model, tmp, args.n, args.seed, args.data, args.batch_size, args.shots,
                        args.allow_unknown_words, args.v1_sizes)
    _print_table(metrics)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


def _tour_config(args: argparse.Namespace) -> TourConfig:
    from reasonlens.tour import TourConfig

    return TourConfig(seed=args.seed, batch_size=args.batch_size)


def _cmd_demo(args: argparse.Namespace) -> None:
    from reasonlens.model import load_model
    from reasonlens.tour import model_with_role, run_tour, tour_report

    out = Path(args.out)
    config = _tour_config(args)
    with atomic_output(out, overwrite=args.overwrite, command=args.command_line, writes=RECIPE_OUTPUT) as tmp:
        main_model = load_model(model_with_role("main"))
        result = run_tour(config, progress=True, models={"main": main_model})
        tour_report(result, main_model).save(result.save(tmp) / "report.html")
    ipg = result.summary()["ipg"]
    print(f"IPG: suppressing the top {max(config.ipg_p)} heads: accuracy "
          f"{ipg['ipg'][str(max(config.ipg_p))]['accuracy']:.2f}, random heads "
          f"{ipg['random'][str(max(config.ipg_p))]['accuracy']:.2f} (unmodified {ipg['original']['accuracy']:.2f})")
    print(f"open {out / 'report.html'} ({sum(result.timings.values()) / 60:.1f} minutes)")


def _cmd_models(args: argparse.Namespace) -> None:
    from reasonlens.model import list_models

    models = list_models()
    if args.json:
        print(json.dumps([{"name": m.name, "role": m.role, "path": str(m.path), "size_bytes": m.size_bytes}
                          for m in models], indent=2))
        return
    for m in models:
        print(f"{m.name:28s} {m.role:12s} {m.size_bytes / 1e6:5.1f} MB  {m.description}")


@contextmanager
def _resumable(out: str) -> Iterator[Path]:
    """The checkpoint folder of a study writing to ``out``: kept (and said so) when the study stops early, removed
    once its results are in place."""
    from reasonlens.resume import remove_checkpoints, resume_folder

    folder = resume_folder(out)
    try:
        yield folder
    except BaseException:
        if any(folder.glob("*.pt")):
            print(f"reasonlens: the analyses finished so far are kept in {folder}; run the same command again to "
                  "resume", file=sys.stderr)
        raise
    remove_checkpoints(folder)


def _mechanism_config(args: argparse.Namespace) -> MechanismConfig:
    from reasonlens.patching.mechanism import MechanismConfig

    return MechanismConfig(hops=args.hops, n_examples=args.n, seed=args.seed, batch_size=args.batch_size,
                           subtasks=_tuple(args.subtasks), ordering=args.ordering, normalize=args.normalize,
                           few_shot=args.few_shot)


def _cmd_run_mechanism(args: argparse.Namespace) -> None:
    from reasonlens.model import load_model
    from reasonlens.patching.mechanism import analyze_mechanism
    from reasonlens.reports import mechanism_report

    config = _mechanism_config(args)
    with _resumable(args.out) as checkpoints, atomic_output(args.out, overwrite=args.overwrite,
                                                            command=args.command_line, writes=RECIPE_OUTPUT) as tmp:
        model = load_model(args.model)
        result = analyze_mechanism(model, config, model_name=args.model, checkpoint_dir=checkpoints)
        mechanism_report(result, model).save(result.save(tmp) / "report.html")
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("circuit_head_fraction_90", "writer_share_late",
                                              "crossover_relative_depth")}, indent=1))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")


def _ipg_config(args: argparse.Namespace) -> IPGStudyConfig:
    from reasonlens.attribution.study import IPGStudyConfig

    return IPGStudyConfig(component=args.component, layers=_tuple(args.layers), n_support=args.n_support,
                          seeds=args.seeds, n_eval=args.n_eval, p_values=_tuple(args.p), rewards=_tuple(args.rewards),
                          seed=args.seed, batch_size=args.batch_size)


def _cmd_run_ipg(args: argparse.Namespace) -> None:
    from reasonlens.attribution.study import run_ipg_study
    from reasonlens.model import load_model
    from reasonlens.reports import ipg_report

    config = _ipg_config(args)
    with _resumable(args.out) as checkpoints, atomic_output(args.out, overwrite=args.overwrite,
                                                            command=args.command_line, writes=RECIPE_OUTPUT) as tmp:
        result = run_ipg_study(load_model(args.model), config, model_name=args.model, progress=True,
                               checkpoint_dir=checkpoints)
        ipg_report(result).save(result.save(tmp) / "report.html")
    summary = result.summary()
    print(json.dumps({"accuracy_original": summary["accuracy_original"]["accuracy"],
                      **{mode: {m: {p: round(v["accuracy"], 3) for p, v in row.items()}
                                for m, row in summary[mode].items()} for mode in ("suppression", "enhancement")}},
                     indent=1))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")


def _second_seed_model(name: str) -> str | None:
    """The shipped second-seed model, as the cross-model partner of the shipped main model (else None)."""
    from reasonlens.model import list_models, model_info

    info = model_info(name)
    if info is None or info.role == "second-seed":
        return None
    return next((m.name for m in list_models() if m.role == "second-seed"), None)


def _step_importance_config(args: argparse.Namespace) -> StepImportanceConfig:
    from reasonlens.importance.study import StepImportanceConfig

    defaults = StepImportanceConfig().labels
    labels = replace(defaults, scoring=replace(defaults.scoring, suffix=args.suffix))
    return StepImportanceConfig(kinds=_tuple(args.kind), hops=_tuple(args.hops), n_per_cell=args.n,
                                validation_per_cell=args.validation_n, redundant_step_p=args.redundant_step_p,
                                source=args.source, labels=labels, seed=args.seed,
                                batch_size=args.batch_size)


def _cmd_run_step_importance(args: argparse.Namespace) -> None:
    from reasonlens.importance.study import run_step_importance_study
    from reasonlens.model import load_model
    from reasonlens.reports import step_importance_report

    second = _second_seed_model(args.model) if args.second_model is None else \
        (None if args.second_model == "none" else args.second_model)
    config = _step_importance_config(args)
    with _resumable(args.out) as checkpoints, atomic_output(args.out, overwrite=args.overwrite,
                                                            command=args.command_line, writes=RECIPE_OUTPUT) as tmp:
        result = run_step_importance_study(load_model(args.model), config,
                                           second_model=load_model(second) if second else None,
                                           model_name=args.model, second_model_name=second,
                                           progress=True, checkpoint_dir=checkpoints)
        step_importance_report(result).save(result.save(tmp) / "report.html")
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("probe_accuracy", "labels_vs_ground_truth", "core_size")}, indent=1))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="reasonlens", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a generated PrOntoQA dataset (.jsonl, or a HF dataset folder)")
    g.add_argument("--n", type=_count(1), required=True)
    g.add_argument("--kind", nargs="+", default=_GENERATOR("kind"), help="fictional, true, false")
    g.add_argument("--hops", nargs="+", type=_count(1), default=[1, 2, 3, 4])  # the command's own
    g.add_argument("--style", default=_GENERATOR("style"), help="prontoqa or dutta")
    g.add_argument("--false-mode", default=_GENERATOR("false_mode"), help="negation or wrong_property")
    g.add_argument("--ordering", nargs="+", default=_GENERATOR("ordering"), help="postorder, preorder, random")
    g.add_argument("--redundant-step-p", type=_probability, default=_GENERATOR("redundant_step_p"))
    g.add_argument("--v1-sizes", action="store_true",
                   help="ontologies of real PrOntoQA v1's sizes (chains of up to 10 concepts, the entity anywhere)")
    # The size options left out stay None, so that --v1-sizes' sizes apply to them.
    g.add_argument("--extra-concepts", type=_count(0), default=_GENERATOR("extra_concepts", unset=True),
                   help=f"most ontology nodes above the proof path (default %(default)s; --v1-sizes: "
                        f"{V1_SIZES['extra_concepts']}; at most {MAX_CONCEPTS - 1})")
    g.add_argument("--min-extra-concepts", type=_count(0), default=_GENERATOR("min_extra_concepts", unset=True),
                   help="fewest of them (default %(default)s)")
    g.add_argument("--below-concepts", type=_count(0), default=_GENERATOR("below_concepts", unset=True),
                   help=f"most nodes below the entity's concept (default: the first generator's rule; --v1-sizes: "
                        f"{V1_SIZES['below_concepts']})")
    g.add_argument("--min-below-concepts", type=_count(0), default=_GENERATOR("min_below_concepts", unset=True),
                   help="fewest of them (default %(default)s)")
    g.add_argument("--seed", type=int, default=_GENERATOR("seed"))
    g.add_argument("--out", required=True, help="a .jsonl file, or a folder for a Hugging Face dataset")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file or dataset folder")
    g.set_defaults(func=_cmd_generate)

    t = sub.add_parser("train", help="train a model with the reference recipe (or, with --zoo, every shipped model)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=_TRAIN("seed"))
    t.add_argument("--zoo", action="store_true", help="reproduce all shipped models: main, second seed, headroom")
    t.add_argument("--install", action="store_true", help="with --zoo: copy the result into the package zoo")
    t.add_argument("--precision", choices=["bfloat16", "float32"], default=_TRAIN("precision", unset=True),
                   help="arithmetic of the blocks' matrix products (default: the recipe's %(default)s, as the shipped "
                        "models were trained; bfloat16 autocast is about twice as fast on a CPU with bfloat16 units "
                        "and trains other weights)")
    t.add_argument("--device", default="auto", help="auto (the GPU when there is one, else the CPU), cpu or cuda; a "
                   "GPU trains other weights than a CPU")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --out that holds no earlier run (its files are kept; an earlier run "
                        "in --out is resumed, with or without this flag)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="decode held-out questions greedily; write metrics.json and report.html")
    e.add_argument("--model", required=True, help="a shipped model name, a local HF folder or a hub name")
    e.add_argument("--n", type=_count(1), default=_EVAL("n_per_cell", unset=True),
                   help="questions per (ontology kind, hops) cell (default %(default)s); with --data: the file's "
                        "first N questions that import (default all)")
    e.add_argument("--seed", type=int, default=_EVAL("seed"))
    e.add_argument("--data", default=None, help="evaluate on a dataset file instead (PrOntoQA v1 JSON, JSONL, HF); "
                   "questions and demonstrations that cannot be imported are left out and counted in metrics.json")
    e.add_argument("--allow-unknown-words", action="store_true",
                   help="with --data: evaluate even if the file has words outside the model's vocabulary (they are "
                        "read as its unknown token and counted in metrics.json; without this flag they are an error)")
    e.add_argument("--shots", type=_count(0), default=_EVAL("shots"),
                   help="few-shot demonstrations before each question (generated data: same kind and hops; --data: "
                        "the file's own in-context examples)")
    e.add_argument("--v1-sizes", action="store_true", help="generated questions on ontologies of real PrOntoQA v1's "
                   "sizes (chains of up to 10 concepts, the entity anywhere in them)")
    e.add_argument("--batch-size", type=_count(1), default=_EVAL("batch_size"))
    e.add_argument("--out", required=True, help="a folder for the results")
    e.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    e.set_defaults(func=_cmd_eval)

    m = sub.add_parser("models", help="list the shipped reference models")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_cmd_models)

    r = sub.add_parser("run", help="run a recipe: cot-mechanism (Dutta et al.), ipg (Integrated Policy Gradient) or "
                                   "step-importance (removability labels and probes)")
    recipes = r.add_subparsers(dest="recipe", required=True)
    c = recipes.add_parser("cot-mechanism", help="activation patching, head roles, circuits, pathways, prior vs context")
    c.add_argument("--model", required=True, help="a shipped model name, a local HF folder or a hub name")
    c.add_argument("--out", required=True)
    c.add_argument("--n", type=_count(1), default=_MECHANISM("n_examples"), help="questions per subtask")
    c.add_argument("--hops", type=_count(1), default=_MECHANISM("hops"))
    c.add_argument("--subtasks", nargs="+", type=_count(0), default=_MECHANISM("subtasks"),
                   help="subtask indices (default: all)")
    c.add_argument("--seed", type=int, default=_MECHANISM("seed"))
    c.add_argument("--ordering", choices=["preorder", "postorder", "random"], default=_MECHANISM("ordering"),
                   help="context order (preorder: Dutta et al.'s)")
    c.add_argument("--normalize", choices=["batch", "example"], default=_MECHANISM("normalize"),
                   help="head scores as a ratio of batch means (Dutta et al.) or a mean of per-example ratios")
    c.add_argument("--few-shot", type=_count(0), default=_MECHANISM("few_shot"),
                   help="demonstrations in the few-shot condition (0: skip it)")
    c.add_argument("--batch-size", type=_count(1), default=_MECHANISM("batch_size"))
    c.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    c.set_defaults(func=_cmd_run_mechanism)

    i = recipes.add_parser("ipg", help="attribute correctness and length with IPG, then suppress / enhance / steer")
    i.add_argument("--model", required=True, help="a shipped model name, a local HF folder or a hub name")
    i.add_argument("--out", required=True)
    i.add_argument("--kind", dest="component", choices=["resid", "neuron", "head"], default=_IPG("component"),
                   help="components (default: %(default)s)")
    i.add_argument("--layers", nargs="+", type=_count(0), default=_IPG("layers"),
                   help="blocks to attribute (default: %(default)s)")
    i.add_argument("--n-support", type=_count(2), default=_IPG("n_support"),
                   help="support-set questions per seed (M, default %(default)s)")
    i.add_argument("--seeds", type=_count(1), default=_IPG("seeds"),
                   help="attribution seeds: disjoint support sets, each with its own samples (default %(default)s)")
    i.add_argument("--rewards", nargs="+", choices=["correctness", "gold_label_logprob", "valid_steps"],
                   default=_IPG("rewards"), help="IPG rewards; the first is compared with the baselines (default: "
                                                 "%(default)s)")
    i.add_argument("--n-eval", type=_count(2), default=_IPG("n_eval"),
                   help="held-out questions per accuracy measurement (default %(default)s)")
    i.add_argument("--p", nargs="+", type=_count(1), default=_IPG("p_values", cases={"for heads": {"component": "head"}}),
                   help="numbers of components to steer (default: %(default)s)")
    i.add_argument("--seed", type=int, default=_IPG("seed"), help="support, evaluation and sampling seed (default "
                   "%(default)s)")
    i.add_argument("--batch-size", type=_count(1), default=_IPG("batch_size"),
                   help="rows per forward (default %(default)s)")
    i.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    i.set_defaults(func=_cmd_run_ipg)

    si = recipes.add_parser("step-importance", help="label which CoT steps are removable, probe activations for it, "
                                                    "compare with token baselines and a second model")
    si.add_argument("--model", required=True, help="a shipped model name, a local HF folder or a hub name")
    si.add_argument("--out", required=True)
    si.add_argument("--second-model", default=None,
                    help="the cross-model partner (default: the shipped second-seed model for a shipped model; "
                         "'none' to skip)")
    si.add_argument("--n", type=_count(1), default=_STEP_IMPORTANCE("n_per_cell"),
                    help="questions per (kind, hops) cell whose chains are labelled and probed")
    si.add_argument("--validation-n", type=_count(1), default=_STEP_IMPORTANCE("validation_per_cell"),
                    help="gold chains with redundant steps per cell: the labels' ground-truth check")
    si.add_argument("--kind", nargs="+", default=_STEP_IMPORTANCE("kinds"), help="fictional, true, false")
    si.add_argument("--hops", nargs="+", type=_count(1), default=_STEP_IMPORTANCE("hops"))
    si.add_argument("--redundant-step-p", type=_probability, default=_STEP_IMPORTANCE("redundant_step_p"))
    si.add_argument("--source", choices=["gold", "greedy"], default=_STEP_IMPORTANCE("source"),
                    help="label the model's greedy chains (the paper's setting) or the generator's gold chains")
    si.add_argument("--suffix", default=ANSWER_NOW,
                    help="the answer-eliciting text sufficiency is read after (the reference models answer after "
                         f"{ANSWER_NOW!r}; use the phrase your model answers after)")
    si.add_argument("--seed", type=int, default=_STEP_IMPORTANCE("seed"))
    si.add_argument("--batch-size", type=_count(1), default=_STEP_IMPORTANCE("batch_size"))
    si.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    si.set_defaults(func=_cmd_run_step_importance)

    d = sub.add_parser("demo", help="the main job: a tour of every method on the shipped models (about 3 minutes), "
                                    "written as one HTML page")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--seed", type=int, default=_TOUR("seed"))
    d.add_argument("--batch-size", type=_count(1), default=_TOUR("batch_size"))
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    d.set_defaults(func=_cmd_demo)
    return p


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line parsed, each option left out at its config's default (:class:`_Default`)."""
    args = build_parser().parse_args(argv)
    for dest, value in list(vars(args).items()):
        if isinstance(value, _Default):
            setattr(args, dest, value.resolve())
    args.command_line = shlex.join(["reasonlens", *argv])
    return args


def main(argv: list[str] | None = None) -> int:
    """Run a command; 0 on success, 2 (with ``reasonlens: error: ...`` on stderr) for bad input or arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parse_args(argv)
    except UsageError as err:
        print(f"reasonlens: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars say what is happening
    try:
        args.func(args)
    except ReasonlensError as err:
        print(f"reasonlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        print("reasonlens: interrupted" + (f"; nothing new was written to {out}" if out and args.command != "train"
                                           else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
