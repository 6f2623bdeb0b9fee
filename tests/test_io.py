"""Saving, loading and importing examples: JSONL, Hugging Face datasets, PrOntoQA v1 JSON."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import (
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
    to_hf_dataset,
)

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
         "line 2 of .* is not JSON"),
        (lambda: load_jsonl(write("alien.jsonl", '{"context": [], "cot": []}\n')), "line 1 of .* is not a reasonlens"),
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
