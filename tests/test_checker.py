"""The text-level checker: parsing both styles, accepting valid proofs and rejecting corrupted ones."""

from __future__ import annotations

import pytest

from reasonlens.errors import ReasonlensError
from reasonlens.ontology import Example, Fact, check, check_chain, generate, infer_concepts, parse_sentence

CONTEXT = ("Each tumpus is large. Tumpuses are rompuses. Each impus is not wooden. Each vumpus is not amenable. "
           "Each vumpus is a numpus. Numpuses are wooden. Numpuses are zumpuses. Zumpuses are sour. Polly is a vumpus.")
QUERY = "True or false: Polly is wooden."
GOLD = ["Polly is a vumpus.", "Each vumpus is a numpus.", "Polly is a numpus.", "Numpuses are wooden.",
        "Polly is wooden."]


@pytest.mark.parametrize(("text", "fact"), [
    ("Every wumpus is a yumpus.", Fact("wumpus", "yumpus", "isa", universal=True)),
    ("Each impus is an impus.", Fact("impus", "impus", "isa", universal=True)),
    ("Wumpuses are yumpuses.", Fact("wumpus", "yumpus", "isa", universal=True)),
    ("Wumpuses are not wooden.", Fact("wumpus", "wooden", "property", negated=True, universal=True)),
    ("Every wumpus is not a yumpus.", Fact("wumpus", "yumpus", "isa", negated=True, universal=True)),
    ("Polly is a wumpus.", Fact("Polly", "wumpus", "isa")),
    ("Polly is not wooden.", Fact("Polly", "wooden", "property", negated=True)),
    ("Wumpus is yumpus.", Fact("wumpus", "yumpus", "isa", universal=True)),
    ("Tumpuses are jompus.", Fact("tumpus", "jompus", "isa", universal=True)),
    ("Jompus is fast.", Fact("jompus", "fast", "property", universal=True)),
    ("Sam is tumpus.", Fact("Sam", "tumpus", "isa")),
    ("Octopuses are clever.", Fact("octopus", "clever", "property", universal=True)),
    ("Cats are not mammals", Fact("cat", "mammal", "isa", negated=True, universal=True)),
    ("EVERY WUMPUS IS A YUMPUS.", Fact("wumpus", "yumpus", "isa", universal=True)),
    ("True or false: Polly is not wooden.", Fact("Polly", "wooden", "property", negated=True)),
    ("Tabbies are cats.", Fact("tabby", "cat", "isa", universal=True)),
    ("Max is a Mersenne prime.", Fact("Max", "mersenne prime", "isa")),
    # PrOntoQA v1's true and false ontologies: numbers as entities, multi-word concepts, plural objects of "are"
    ("31 is a Mersenne prime.", Fact("31", "mersenne prime", "isa")),
    ("True or false: 8191 is not composite.", Fact("8191", "composite", "property", negated=True)),
    ("Mersenne primes are prime numbers.", Fact("mersenne prime", "prime number", "isa", universal=True)),
    ("Each Mersenne prime is not an even number.",
     Fact("mersenne prime", "even number", "isa", negated=True, universal=True)),
    ("Natural numbers are integers.", Fact("natural number", "integer", "isa", universal=True)),
    ("Real numbers are not imaginary.", Fact("real number", "imaginary", "property", negated=True, universal=True)),
    ("Invertebrates are lepidopterans.", Fact("invertebrate", "lepidopteran", "isa", universal=True)),
    ("Painted ladies are butterflies.", Fact("painted lady", "butterfly", "isa", universal=True)),
    ("Cats are sheep.", Fact("cat", "sheep", "isa", universal=True)),
    ("Sheep are not bacteria.", Fact("sheep", "bacteria", "isa", negated=True, universal=True)),
    ("Timples are dalpists.", Fact("timple", "dalpist", "isa", universal=True)),
    ("Mammals are warm-blooded.", Fact("mammal", "warm-blooded", "property", universal=True)),
    ("Insects are not eight-legged.", Fact("insect", "eight-legged", "property", negated=True, universal=True)),
    ("Wumpuses are nervous.", Fact("wumpus", "nervous", "property", universal=True)),
    ("Timples are gloopy.", Fact("timple", "gloopy", "property", universal=True)),
])
def test_parse_sentence(text, fact):
    assert parse_sentence(text) == fact


def test_number_ontology_chain_checks_out():
    context = ("Mersenne primes are not composite. Each Mersenne prime is a prime number. Prime numbers are natural "
               "numbers. Natural numbers are not negative. Each negative number is negative. 127 is a Mersenne prime.")
    chain = ("127 is a Mersenne prime. Each Mersenne prime is a prime number. 127 is a prime number. Prime numbers "
             "are natural numbers. 127 is a natural number. Natural numbers are not negative. 127 is not negative.")
    result = check_chain(context, "True or false: 127 is negative.", chain, "False")
    assert result.ok, result.problems
    assert [s.role for s in result.steps].count("derived_fact") == 3
    assert result.steps[-1].rule == Fact("natural number", "negative", "property", negated=True, universal=True)
    assert "prime number" in infer_concepts([context]) and "negative" not in infer_concepts([context])
    assert not check_chain(context, "True or false: 127 is negative.", chain.replace("127 is a prime number. ", ""),
                           "False").steps_valid


@pytest.mark.parametrize("text", ["Polly likes numbers.", "Is Polly a wumpus?", "", "Every is a wumpus.",
                                  "Polly and Rex are wumpuses or not."])
def test_parse_sentence_rejects_unknown_forms(text):
    with pytest.raises(ReasonlensError, match="cannot parse"):
        parse_sentence(text)


def test_unknown_words_are_classified_from_the_text():
    concepts = infer_concepts(["Timples are tergits.", "Every tergit is not blue.", "Max is a dalpist.",
                               "Shumples are nervous."])
    assert {"timple", "tergit", "dalpist", "shumple"} <= concepts and "nervous" not in concepts
    assert parse_sentence("Timples are tergits.", concepts) == Fact("timple", "tergit", "isa", universal=True)
    assert parse_sentence("Timples are gloopy.", concepts) == Fact("timple", "gloopy", "property", universal=True)
    context = "Timples are tergits. Every tergit is not blue. Max is a timple."
    result = check_chain(context, "True or false: Max is blue.",
                         "Max is a timple. Timples are tergits. Max is a tergit. Every tergit is not blue. "
                         "Max is not blue. False")
    assert result.ok, result.problems


def test_gold_chain_and_text_entry_point():
    result = check_chain(CONTEXT, QUERY, " ".join(GOLD), "True")
    assert result.ok and result.steps_valid and result.label_correct and result.reaches_query
    assert [s.role for s in result.steps] == ["premise_copy", "rule_copy", "derived_fact", "rule_copy",
                                              "derived_fact"]
    assert result.steps[2].premise == Fact("Polly", "vumpus", "isa")
    assert result.steps[2].rule == Fact("vumpus", "numpus", "isa", universal=True)
    assert check_chain(CONTEXT, QUERY, " ".join(GOLD) + " True").ok  # answer read from the completion
    assert check_chain(CONTEXT, QUERY, GOLD, True).ok  # sentences as a list, answer as a bool


def test_valid_but_different_proofs_are_accepted():
    no_rule_copies = ["Polly is a vumpus.", "Polly is a numpus.", "Polly is wooden."]
    detour = ["Polly is a vumpus.", "Each vumpus is not amenable.", "Polly is not amenable.", "Polly is a numpus.",
              "Polly is a zumpus.", "Polly is sour.", "Numpuses are wooden.", "Polly is wooden."]
    for chain in (no_rule_copies, detour):
        result = check_chain(CONTEXT, QUERY, chain, "True")
        assert result.ok, result.problems
        assert [s.text for s in result.steps] != GOLD


def test_flipped_polarity_is_rejected():
    chain = GOLD[:-1] + ["Polly is not wooden."]
    result = check_chain(CONTEXT, QUERY, chain, "False")
    assert not result.ok and not result.steps[-1].valid
    assert "does not follow" in result.steps[-1].reason
    assert any("answer False is wrong" in p for p in result.problems)
    flipped_rule = GOLD[:3] + ["Numpuses are not wooden.", "Polly is not wooden."]
    assert check_chain(CONTEXT, QUERY, flipped_rule, "False").steps[3].role == "invalid"


def test_skipped_rule_is_rejected():
    chain = ["Polly is a vumpus.", "Numpuses are wooden.", "Polly is wooden."]
    result = check_chain(CONTEXT, QUERY, chain, "True")
    assert [s.valid for s in result.steps] == [True, True, False]
    assert result.problems[0].startswith("step 2 'Polly is wooden.': does not follow")


def test_wrong_label_is_rejected():
    result = check_chain(CONTEXT, QUERY, GOLD, "False")
    assert result.steps_valid and not result.label_correct and result.expected_label is True
    assert result.problems == ("answer False is wrong: the context entails 'Polly is wooden'",)


def test_invented_rule_is_rejected():
    chain = ["Polly is a vumpus.", "Every vumpus is wooden.", "Polly is wooden."]
    result = check_chain(CONTEXT, QUERY, chain, "True")
    assert result.steps[1].role == "invalid" and "invented rule" in result.steps[1].reason
    assert not result.steps[2].valid  # the invented rule cannot justify the next step
    assert not result.ok


def test_unparseable_sentences_are_problems_not_exceptions():
    result = check_chain(CONTEXT, QUERY, GOLD[:2] + ["Polly likes numbers."] + GOLD[2:], "True")
    assert result.steps[2].role == "invalid" and result.steps[2].reason == "unparseable sentence"
    assert any(p.startswith("step 2: cannot parse 'Polly likes numbers.'") for p in result.problems)
    bad_query = check_chain(CONTEXT, "True or false: is Polly wooden?", GOLD, "True")
    assert bad_query.query is None and bad_query.expected_label is None and not bad_query.ok
    bad_context = check_chain(CONTEXT + " Colourless green ideas sleep furiously.", QUERY, GOLD, "True")
    assert bad_context.context[-1] is None and any(p.startswith("context sentence 9") for p in bad_context.problems)


def test_missing_or_odd_answer_and_incomplete_chain():
    assert "no answer" in check_chain(CONTEXT, QUERY, GOLD).problems[0]
    assert "'maybe' is not True or False" in check_chain(CONTEXT, QUERY, GOLD, "maybe").problems[0]
    stops_early = check_chain(CONTEXT, QUERY, GOLD[:3], "True")
    assert stops_early.steps_valid and stops_early.label_correct and not stops_early.reaches_query
    assert "never states 'Polly is wooden'" in stops_early.problems[0]


def test_wrong_property_query_is_false():
    query = "True or false: Polly is bitter."
    assert check_chain(CONTEXT, query, GOLD, "False").ok
    assert check_chain(CONTEXT, query, GOLD, "True").expected_label is False


def _corrupt_last_step(ex: Example) -> list[str]:
    text = ex.cot[-1].text
    return [s.text for s in ex.cot[:-1]] + [text.replace(" is not ", " is ") if " is not " in text
                                            else text.replace(" is ", " is not ", 1)]


def test_corruptions_of_generated_examples_are_rejected():
    exs = generate(24, kind=("fictional", "true", "false"), hops=(2, 3, 4), style="dutta", seed=2) + generate(
        24, kind=("fictional", "true", "false"), hops=(2, 3, 4), seed=2)
    for ex in exs:
        context = [s.text for s in ex.context]
        assert check(ex).ok
        assert not check_chain(context, ex.query_text, _corrupt_last_step(ex), ex.answer).ok
        skipped = [s.text for i, s in enumerate(ex.cot) if i not in (2, 3)]  # drop a derived fact and next rule
        assert not check_chain(context, ex.query_text, skipped, ex.answer).steps_valid
        assert not check_chain(context, ex.query_text, [s.text for s in ex.cot], not ex.label).ok
