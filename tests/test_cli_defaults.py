"""The command line takes its defaults from the configs it builds: a command given only its required arguments
builds the config's defaults, and ``--help`` shows them."""

from __future__ import annotations

import pytest

from reasonlens import cli
from reasonlens.attribution.study import IPGStudyConfig
from reasonlens.evaluate import EvalConfig
from reasonlens.importance.study import StepImportanceConfig
from reasonlens.ontology import GeneratorConfig
from reasonlens.patching.mechanism import MechanismConfig
from reasonlens.tour import TourConfig
from reasonlens.train import TrainConfig


def _eval_config(args):
    return cli._eval_config(args.n, args.seed, args.batch_size, args.shots, args.v1_sizes)


@pytest.mark.parametrize(("argv", "build", "expected"), [
    # generate's hops (1-4) are the command's own: GeneratorConfig's default is one hop count.
    (["generate", "--n", "1", "--out", "d.jsonl"], cli._generator_config, GeneratorConfig(hops=(1, 2, 3, 4))),
    (["generate", "--n", "1", "--v1-sizes", "--out", "d.jsonl"], cli._generator_config,
     GeneratorConfig(hops=(1, 2, 3, 4), **cli.V1_SIZES)),
    (["eval", "--model", "m", "--out", "o"], _eval_config, EvalConfig()),
    (["demo"], cli._tour_config, TourConfig()),
    (["run", "cot-mechanism", "--model", "m", "--out", "o"], cli._mechanism_config, MechanismConfig()),
    (["run", "ipg", "--model", "m", "--out", "o"], cli._ipg_config, IPGStudyConfig()),
    (["run", "ipg", "--model", "m", "--out", "o", "--kind", "head"], cli._ipg_config, IPGStudyConfig(component="head")),
    (["run", "step-importance", "--model", "m", "--out", "o"], cli._step_importance_config, StepImportanceConfig()),
])
def test_required_arguments_only_build_the_configs_defaults(argv, build, expected):
    assert build(cli._parse_args(argv)) == expected


def test_options_left_out_are_plain_values():
    for argv in (["train", "--out", "o"], ["eval", "--model", "m", "--data", "x.json", "--out", "o"],
                 ["generate", "--n", "1", "--out", "d.jsonl"]):
        args = cli._parse_args(argv)
        assert not [k for k, v in vars(args).items() if isinstance(v, cli._Default)]
    train = cli._parse_args(["train", "--out", "o"])
    assert train.seed == TrainConfig().seed and train.precision is None  # None: each recipe stage's precision
    assert cli._parse_args(["eval", "--model", "m", "--data", "x.json", "--out", "o"]).n is None  # all of the file
    assert cli._parse_args(["generate", "--n", "1", "--out", "d.jsonl"]).extra_concepts is None  # --v1-sizes' apply


@pytest.mark.parametrize("command", [["generate"], ["train"], ["eval"], ["demo"], ["run", "cot-mechanism"],
                                     ["run", "ipg"], ["run", "step-importance"]])
def test_help_shows_the_configs_defaults(capsys, command):
    assert cli.main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "%(" not in text and "_Default" not in text
    shown = {
        "generate": f"(default {GeneratorConfig().extra_concepts}; --v1-sizes: {cli.V1_SIZES['extra_concepts']};",
        "train": f"(default: the recipe's {TrainConfig().precision},",
        "eval": f"cell (default {EvalConfig().n_per_cell});",
        "ipg": "numbers of components to steer (default: {}; for heads {})".format(
            *(" ".join(map(str, IPGStudyConfig(component=k).p_values)) for k in ("resid", "head"))),
    }
    if command[-1] in shown:
        assert shown[command[-1]] in text
