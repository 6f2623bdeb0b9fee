"""Ontology data: PrOntoQA-style worlds, questions and chains of thought with role tags."""

from reasonlens.ontology.generator import GeneratorConfig, generate
from reasonlens.ontology.types import Example, Fact, Ontology, Sentence

__all__ = ["Example", "Fact", "GeneratorConfig", "Ontology", "Sentence", "generate"]
