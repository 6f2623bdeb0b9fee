"""Saving, loading and importing examples: JSONL, Hugging Face datasets, PrOntoQA v1 JSON."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import (
    Fact,
    check,
    demonstrations,
    format_completion,
    format_prompt,
    from_hf_dataset,
    generate,
    load_dataset_file,
    load_jsonl,
    load_prontoqa_v1,
    save_jsonl,
    split_sentences,
    to_hf_dataset,
)
from reasonlens.ontology.io import prepare_for_model, read_dataset, unknown_words
from reasonlens.tokenizer import build_reference_tokenizer

V1_SAMPLE = Path(__file__).parent / "data" / "prontoqa_v1_sample.json"


@pytest.fixture(scope="module")
def examples():
    return (generate(12, kind=("fictional", "true", "false"), hops=(1, 3, 5), redundant_step_p=0.5, seed=4)
            + generate(6, style="dutta", false_mode="wrong_property", seed=4))


@pytest.fixture(scope="module")
def v1():
    return load_prontoqa_v1(V1_SAMPLE)


def test_jsonl_round_trip(examples, tmp_path):
    path = save_jsonl(examples, tmp_path / "sub" / "examples.jsonl")
    assert len(path.read_text().splitlines()) == len(examples)
    assert load_jsonl(path) == examples
    assert load_dataset_file(path) == examples


def test_hf_dataset_round_trip(examples, tmp_path):
    ds = to_hf_dataset(examples)
    assert len(ds) == len(examples)
    assert ds["answer"] == [ex.answer for ex in examples] and ds["question"][0] == examples[0].question
    assert from_hf_dataset(ds) == examples
    ds.save_to_disk(str(tmp_path / "ds"))
    assert from_hf_dataset(datasets.load_from_disk(str(tmp_path / "ds"))) == examples
    assert load_dataset_file(tmp_path / "ds") == examples


def test_prontoqa_v1_import_recovers_structure(v1):
    assert [ex.entity for ex in v1] == ["Polly", "Rex", "Stella", "Fae"]
    assert [ex.hops for ex in v1] == [2, 1, 3, 2]
    assert [ex.label for ex in v1] == [True, False, True, True]
    assert [ex.kind for ex in v1] == ["fictional", "fictional", "fictional", "true"]
    assert [ex.ontology.distractor for ex in v1] == ["impus", "impus", "dumpus", "snail"]
    assert [len(demonstrations(ex)) for ex in v1] == [2, 1, 1, 0]
    polly = v1[0]
    assert polly.style == "prontoqa" and polly.meta["id"] == "example1"
    assert polly.question.startswith("Each tumpus is large.") and polly.query_text == "True or false: Polly is wooden."
    assert [s.role for s in polly.cot] == ["premise_copy", "rule_copy", "derived_fact", "rule_copy", "derived_fact"]
    roles = {s.text: s.role for s in polly.context}
    assert roles["Each vumpus is a numpus."] == "proof_rule" and roles["Numpuses are wooden."] == "property_rule"
    assert roles["Polly is a vumpus."] == "entity_fact" and roles["Each impus is not wooden."] == "distractor"
    assert sum(r != "distractor" for r in roles.values()) == polly.hops + 1
    assert polly.ontology.parents["vumpus"] == "numpus" and ("wooden", True) in polly.ontology.properties["numpus"]
    stella = v1[2]
    assert stella.cot[2].text == "Stella is an impus." and stella.cot[-1].fact.negated


def test_prontoqa_v1_import_passes_the_checker_and_prompts_like_v1(v1):
    for ex in v1:
        assert check(ex).ok
        assert all(check(d).ok for d in demonstrations(ex))
    raw = json.loads(V1_SAMPLE.read_text())["example1"]
    expected = "".join(f"Q: {d['question']} {d['query']}\nA: {' '.join(d['chain_of_thought'])} {d['answer']}\n\n"
                       for d in (raw["in_context_example0"], raw["in_context_example1"]))
    expected += f"Q: {raw['test_example']['question']} {raw['test_example']['query']}\nA:"
    assert format_prompt(v1[0], demonstrations(v1[0])) == expected
    assert format_completion(v1[0]) == " " + " ".join(raw["test_example"]["chain_of_thought"]) + " True"


def test_imported_examples_round_trip(v1, tmp_path):
    assert load_dataset_file(V1_SAMPLE) == v1
    assert load_jsonl(save_jsonl(v1, tmp_path / "v1.jsonl")) == v1
    assert from_hf_dataset(to_hf_dataset(v1)) == v1


def _v1_file(tmp_path: Path, test_example: dict) -> Path:
    path = tmp_path / "bad_v1.json"
    path.write_text(json.dumps({"example1": {"test_example": test_example}}))
    return path


def test_errors(tmp_path):
    def write(name: str, text: str) -> Path:
        (tmp_path / name).write_text(text)
        return tmp_path / name

    cases = [
        (lambda: load_dataset_file(tmp_path / "missing.jsonl"), "no such file"),
        (lambda: load_jsonl(write("empty.jsonl", "")), "is empty"),
        (lambda: load_dataset_file(write("blank.json", "  \n\n")), "is empty"),
        (lambda: load_dataset_file(write("list.json", "[1, 2]")), "cannot tell what"),
        (lambda: load_dataset_file(write("notes.txt", "hello world")), "cannot tell what"),
        (lambda: load_jsonl(write("bad.jsonl", json.dumps(generate(1)[0].to_dict()) + "\n{oops\n")),
         r"line 2 \(record 2\) of .* is not JSON"),
        (lambda: load_jsonl(write("alien.jsonl", '{"context": [], "cot": []}\n')),
         r"1 of 1 records of .* record 1 \(line 1\): lacks the fields \['kind', 'hops'"),
        (lambda: load_prontoqa_v1(write("empty_v1.json", "{}")), "holds no PrOntoQA v1 questions"),
        (lambda: load_prontoqa_v1(write("no_test.json", '{"example1": {}}')), "has no 'test_example'"),
        (lambda: load_prontoqa_v1(_v1_file(tmp_path, {"question": "Polly is a wumpus."})), "needs the fields"),
        (lambda: load_prontoqa_v1(_v1_file(tmp_path, {
            "question": "Wumpuses are red. Polly is a wumpus.", "query": "True or false: Polly is red.",
            "chain_of_thought": ["Polly is a wumpus.", "Polly is red."], "answer": "False"})),
         "does not check out: answer False is wrong"),
        (lambda: save_jsonl([], tmp_path / "none.jsonl"), "no examples to save"),
        (lambda: to_hf_dataset([]), "no examples to put in a dataset"),
        (lambda: from_hf_dataset(datasets.Dataset.from_dict({"text": ["a"]})), "no 'example_json' column"),
        (lambda: from_hf_dataset(datasets.Dataset.from_dict({"example_json": []})), "the dataset is empty"),
    ]
    for call, message in cases:
        with pytest.raises(ReasonlensError, match=message):
            call()


def test_dataset_directory_errors(examples, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ReasonlensError, match="not a saved dataset"):
        load_dataset_file(tmp_path / "plain")
    datasets.DatasetDict({"train": to_hf_dataset(examples[:2])}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ReasonlensError, match=r"holds splits \['train'\]"):
        load_dataset_file(tmp_path / "dict")


DATA = Path(__file__).parent / "data"
V1_TRUE, V1_FALSE = DATA / "prontoqa_v1_true.json", DATA / "prontoqa_v1_false.json"
V1_BROKEN, V1_UNKNOWN = DATA / "prontoqa_v1_broken.json", DATA / "prontoqa_v1_unknown_words.json"


def test_true_ontology_v1_with_numbers_and_multi_word_concepts(tmp_path):
    examples, report = read_dataset(V1_TRUE)
    assert [ex.kind for ex in examples] == ["true"] * 3
    assert [ex.entity for ex in examples] == ["127", "Rex", "Wren"] and [ex.hops for ex in examples] == [3, 3, 3]
    assert [ex.label for ex in examples] == [False, True, True]
    numbers = examples[0]
    assert numbers.ontology.parents["mersenne prime"] == "prime number"
    assert numbers.ontology.parents["natural number"] == "integer"
    assert ("negative", False) in numbers.ontology.properties["natural number"]
    assert numbers.ontology.distractor == "negative number"
    assert numbers.cot[2].fact == Fact("127", "prime number", "isa") and numbers.cot[2].role == "derived_fact"
    roles = {s.text: s.role for s in numbers.context}
    assert roles["Each Mersenne prime is a prime number."] == "proof_rule"
    assert roles["Natural numbers are not negative."] == "property_rule"
    assert roles["Each negative number is negative."] == "distractor" and roles["127 is a Mersenne prime."] == "entity_fact"
    assert [demonstrations(ex)[0].kind for ex in examples] == ["true"] * 3
    assert demonstrations(examples[0])[0].ontology.parents["painted lady"] == "butterfly"
    assert examples[1].ontology.parents["vertebrate"] == "chordate"
    raw = json.loads(V1_TRUE.read_text())["example1"]
    for ex in examples:
        assert check(ex).ok and all(check(d).ok for d in demonstrations(ex))
    assert format_prompt(numbers, demonstrations(numbers)).endswith(
        f"Q: {raw['test_example']['question']} {raw['test_example']['query']}\nA:")
    assert report.to_dict()["kinds"] == {"true": 3} and not report.skipped and not report.dropped_demonstrations
    assert load_jsonl(save_jsonl(examples, tmp_path / "v1_true.jsonl")) == examples


def test_false_ontology_v1_is_recognised():
    examples = load_prontoqa_v1(V1_FALSE)
    assert [ex.kind for ex in examples] == ["false"] * 3
    assert [ex.entity for ex in examples] == ["Alex", "Stella", "Max"] and [ex.hops for ex in examples] == [2, 2, 3]
    assert examples[0].ontology.parents["fraction"] == "mersenne prime"
    assert examples[1].ontology.parents == {"cat": "sheep", "sheep": "dog", "dog": "mammal", "mammal": "feline"}
    # a true edge ("Each cat is a feline") with fictional properties is still a false ontology
    assert demonstrations(examples[0])[0].ontology.parents == {"cat": "feline"}
    assert [demonstrations(ex)[0].kind for ex in examples] == ["false"] * 3
    assert all(check(ex).ok for ex in examples)


@pytest.mark.parametrize(("context", "chain", "kind"), [
    ("Each cat is a feline. Felines are furry. Every snake is not furry. Fae is a cat.",
     "Fae is a cat. Each cat is a feline. Fae is a feline. Felines are furry. Fae is furry.", "true"),
    ("Each cat is a feline. Felines are red. Every snake is not red. Fae is a cat.",  # fictional property
     "Fae is a cat. Each cat is a feline. Fae is a feline. Felines are red. Fae is red.", "false"),
    ("Each cat is a snake. Snakes are furry. Every dog is not furry. Fae is a cat.",  # false edge
     "Fae is a cat. Each cat is a snake. Fae is a snake. Snakes are furry. Fae is furry.", "false"),
    ("Each cat is not a snake. Cats are felines. Felines are furry. Fae is a cat.",  # true negated edge
     "Fae is a cat. Cats are felines. Fae is a feline. Felines are furry. Fae is furry.", "true"),
    ("Each cat is not a feline. Cats are tabbies. Tabbies are furry. Fae is a cat.",  # false negated edge
     "Fae is a cat. Cats are tabbies. Fae is a tabby. Tabbies are furry. Fae is furry.", "false"),
    ("Integers are natural numbers. Natural numbers are positive. 31 is an integer.",
     "31 is an integer. Integers are natural numbers. 31 is a natural number. Natural numbers are positive. "
     "31 is positive.", "false"),
    ("Each timple is a wumpus. Wumpuses are furry. Fae is a timple.",
     "Fae is a timple. Each timple is a wumpus. Fae is a wumpus. Wumpuses are furry. Fae is furry.", "unknown"),
])
def test_ontology_kind_follows_the_real_world(tmp_path, context, chain, kind):
    query = "True or false: " + split_sentences(chain)[-1]
    path = _v1_file(tmp_path, {"question": context, "query": query, "chain_of_thought": chain, "answer": "True"})
    assert load_prontoqa_v1(path)[0].kind == kind


def test_broken_demonstrations_and_questions_are_dropped_and_counted():
    with pytest.warns(UserWarning, match="left out 1 of 3 questions and 2 demonstrations"):
        examples = load_prontoqa_v1(V1_BROKEN)
    assert [ex.meta["id"] for ex in examples] == ["example1", "example3"]
    assert [len(demonstrations(ex)) for ex in examples] == [1, 1]
    dropped = examples[0].meta["dropped_demonstrations"]
    assert [(d["id"], d["category"]) for d in dropped] == [("example1/in_context_example1", "unparseable sentence"),
                                                          ("example1/in_context_example2", "chain does not check out")]
    assert "cannot parse 'Every dumpus is a rompus or a tumpus.'" in dropped[0]["reason"]
    assert "answer False is wrong" in dropped[1]["reason"]
    with pytest.warns(UserWarning):
        assert load_dataset_file(V1_BROKEN) == examples
    examples_again, report = read_dataset(V1_BROKEN)
    assert examples_again == examples
    d = report.to_dict()
    assert d["questions_read"] == 3 and d["examples_imported"] == 2
    assert d["questions_skipped"]["count"] == 1 and d["questions_skipped"]["reasons"] == {"unparseable sentence": 1}
    assert d["questions_skipped"]["first"][0]["id"] == "example2/test_example"
    assert "'Sam is an impus and a zumpus.'" in d["questions_skipped"]["first"][0]["reason"]
    assert d["demonstrations"] == {"read": 4, "kept": 2, "dropped": 2, "first_dropped": dropped,
                                   "reasons": {"unparseable sentence": 1, "chain does not check out": 1}}
    assert "skipped 1 questions (unparseable sentence: 1)" in report.summary()


def test_limit_reads_the_first_questions(examples, tmp_path):
    assert [ex.meta["id"] for ex in load_prontoqa_v1(V1_SAMPLE, limit=2)] == ["example1", "example2"]
    first, report = read_dataset(V1_BROKEN, limit=2)  # the report lists what was left out: no warning
    assert [ex.meta["id"] for ex in first] == ["example1", "example3"] and report.questions_read == 3
    assert read_dataset(V1_BROKEN, limit=1)[1].questions_read == 1
    path = save_jsonl(examples, tmp_path / "ex.jsonl")
    assert read_dataset(path, limit=3)[0] == examples[:3] and read_dataset(path)[0] == examples
    with pytest.raises(ReasonlensError, match=r"limit \(--n\) must be a positive"):
        read_dataset(path, limit=0)


def test_unknown_words_are_reported_or_rejected():
    tok = build_reference_tokenizer()
    assert unknown_words(["Q: Every wumpus is a yumpus. True or false: Polly is red.\nA: True"], tok) == {}
    examples, report = read_dataset(V1_UNKNOWN)
    with pytest.raises(ReasonlensError, match=r"7 words of .*unknown_words.json are outside the model's vocabulary "
                                              r"\(13 occurrences.*'tergits' \(3\), 'tergit' \(3\), 'timples' \(2\)"
                                              r".*--allow-unknown-words"):
        prepare_for_model(examples, report, tok, n_ctx=1024)
    kept = prepare_for_model(examples, report, tok, n_ctx=1024, allow_unknown_words=True)
    assert kept == examples
    words = report.to_dict()["unknown_words"]
    assert words == {"distinct": 7, "occurrences": 13, "allowed": True,
                     "most_common": {"tergits": 3, "tergit": 3, "timples": 2, "timple": 2, "dalpists": 1, "dalpist": 1,
                                     "shumple": 1}}
    assert "7 words outside the model's vocabulary (13 occurrences" in report.summary()
    with_demos, report = read_dataset(V1_UNKNOWN)
    prepare_for_model(with_demos, report, tok, n_ctx=1024, shots=1, allow_unknown_words=True)
    assert {"yimple", "starple", "starples", "fomple"} <= set(report.unknown_words)  # demonstrations in the prompt
    sample, report = read_dataset(V1_SAMPLE)
    assert prepare_for_model(sample, report, tok, n_ctx=1024) == sample and report.unknown_words == {}
    true, report = read_dataset(V1_TRUE)
    prepare_for_model(true, report, tok, n_ctx=1024, allow_unknown_words=True)
    assert {"127", "mersenne", "prime", "warm-blooded", "bilaterian"} <= set(report.unknown_words)


def test_shots_and_context_length_are_checked():
    tok = build_reference_tokenizer()
    examples, report = read_dataset(V1_SAMPLE)
    with pytest.raises(ReasonlensError, match=r"1 demonstrations asked for, but 1 of 4 questions .* carry fewer "
                                              r"\(example4 carries 0\); use --shots 0 or fewer"):
        prepare_for_model(examples, report, tok, n_ctx=1024, shots=1)
    broken, broken_report = read_dataset(V1_BROKEN)
    with pytest.raises(ReasonlensError, match="2 of theirs could not be imported"):
        prepare_for_model(broken, broken_report, tok, n_ctx=1024, shots=2)
    lengths = [len(tok(format_prompt(ex))["input_ids"]) for ex in examples]
    gold = max(len(tok(format_completion(ex), add_special_tokens=False)["input_ids"]) for ex in examples)
    n_ctx = sorted(lengths)[-2] + gold + 16  # the longest prompt no longer fits
    kept = prepare_for_model(examples, report, tok, n_ctx=n_ctx)
    longest = examples[lengths.index(max(lengths))]
    assert longest not in kept and len(kept) == 3 and report.too_long == [longest.meta["id"]]
    assert report.to_dict()["too_long"] == {"count": 1, "n_ctx": n_ctx, "first": [longest.meta["id"]]}
    assert report.to_dict()["examples_evaluated"] == 3
    with pytest.raises(ReasonlensError, match="every question of .* is too long for the model's context of 20"):
        prepare_for_model(examples, report, tok, n_ctx=20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from model_util import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("io") / "tiny", "llama", n_ctx=256)


def test_eval_data_checks_and_reports_the_import(tiny, tmp_path, capsys):
    from reasonlens.cli import main

    out = tmp_path / "eval"
    eval_args = ["eval", "--model", str(tiny), "--out", str(out), "--overwrite", "--data"]
    assert main([*eval_args, str(V1_UNKNOWN)]) == 2
    err = capsys.readouterr().err
    assert "7 words of" in err and "--allow-unknown-words" in err and not (out / "metrics.json").exists()
    assert main([*eval_args, str(V1_UNKNOWN), "--allow-unknown-words"]) == 0
    imported = json.loads((out / "metrics.json").read_text())["import"]
    assert imported["unknown_words"]["distinct"] == 7 and imported["unknown_words"]["allowed"]
    assert imported["examples_evaluated"] == 2 and len((out / "records.jsonl").read_text().splitlines()) == 2

    assert main([*eval_args, str(V1_BROKEN), "--n", "1", "--shots", "1"]) == 0
    assert "dropped 2 of their 3 demonstrations" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    imported = metrics["import"]
    assert imported["limit"] == 1 and imported["questions_read"] == 1 and imported["examples_evaluated"] == 1
    assert imported["demonstrations"]["dropped"] == 2 and imported["shots"] == 1
    assert imported["unknown_words"]["distinct"] == 0 and imported["too_long"]["count"] == 0
    records = (out / "records.jsonl").read_text().splitlines()
    assert len(records) == 1 and json.loads(records[0])["prompt"].count("Q: ") == 2
    assert main([*eval_args, str(V1_BROKEN), "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
