"""Ontology data: PrOntoQA-style worlds, questions and chains of thought with role tags."""

from reasonlens.ontology.checker import (
    CheckResult,
    StepVerdict,
    check,
    check_chain,
    infer_concepts,
    parse_sentence,
    split_sentences,
)
from reasonlens.ontology.generator import GeneratorConfig, generate
from reasonlens.ontology.io import (
    demonstrations,
    from_hf_dataset,
    load_dataset_file,
    load_jsonl,
    load_prontoqa_v1,
    save_jsonl,
    to_hf_dataset,
)
from reasonlens.ontology.prompt import format_completion, format_prompt
from reasonlens.ontology.types import Example, Fact, Ontology, Sentence

__all__ = [
    "CheckResult",
    "Example",
    "Fact",
    "GeneratorConfig",
    "Ontology",
    "Sentence",
    "StepVerdict",
    "check",
    "check_chain",
    "demonstrations",
    "format_completion",
    "format_prompt",
    "from_hf_dataset",
    "generate",
    "infer_concepts",
    "load_dataset_file",
    "load_jsonl",
    "load_prontoqa_v1",
    "parse_sentence",
    "save_jsonl",
    "split_sentences",
    "to_hf_dataset",
]
