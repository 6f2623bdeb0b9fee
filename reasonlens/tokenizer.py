"""The word-level tokenizer of the reference models, saved as a standard ``tokenizer.json``.

Every concept, entity and property word is one token. Text is lowercased and plural nouns share their
stem with the singular (``Wumpuses`` -> ``wumpus ##es``), so the model sees one token per concept in
every surface form. Newlines are tokens (prompt structure); other whitespace is dropped.
"""

from __future__ import annotations

from pathlib import Path

from reasonlens.ontology.lexicon import ENTITIES, FICTIONAL_CONCEPTS, PROPERTIES, TRUE_PROPERTIES, TRUE_TAXONOMY

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
FUNCTION_WORDS: tuple[str, ...] = (
    "every", "each", "is", "are", "a", "an", "not", "true", "or", "false", "q", "let", "us", "think",
    "step", "by", "input", "response", ".", ":", "#", ",", "\n",
)
SUFFIXES: tuple[str, ...] = ("##es", "##s")
# Further nonsense concept names used by Dutta et al. for distractors in demonstrations.
EXTRA_CONCEPTS: tuple[str, ...] = ("twimpus", "shampor", "jempor", "jelgit", "dropant", "daumpin")
# Version 2 appends the words of the answer-now suffix (reasonlens.ontology.prompt.ANSWER_NOW); the ids of version 1
# (the shipped models' vocabulary) stay as they are.
VOCABULARY_VERSIONS: tuple[int, ...] = (1, 2)
ANSWER_NOW_WORDS: tuple[str, ...] = ("so", "the", "answer")


def reference_vocabulary(version: int = 1) -> list[str]:
    """The reference vocabulary of ``version`` (:data:`VOCABULARY_VERSIONS`), in id order (specials first); a
    later version appends words, so every earlier id keeps its word.

    >>> reference_vocabulary(2)[:len(reference_vocabulary(1))] == reference_vocabulary(1)
    True
    """
    if version not in VOCABULARY_VERSIONS:
        from reasonlens.errors import ReasonlensError

        raise ReasonlensError(f"unknown vocabulary version {version!r}; choose from {VOCABULARY_VERSIONS}")
    words = [
        *FUNCTION_WORDS,
        *FICTIONAL_CONCEPTS, *EXTRA_CONCEPTS,
        *(e.lower() for e in ENTITIES),
        *PROPERTIES,
        *TRUE_TAXONOMY,
        *TRUE_PROPERTIES,
        *SUFFIXES,
        *(ANSWER_NOW_WORDS if version >= 2 else ()),
    ]
    seen: dict[str, None] = dict.fromkeys(SPECIAL_TOKENS)
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def build_reference_tokenizer(version: int = 1):
    """A ``transformers.PreTrainedTokenizerFast`` over :func:`reference_vocabulary` of ``version`` that prepends
    BOS.

    >>> tok = build_reference_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("Wumpuses are not wooden.")["input_ids"])
    ['[BOS]', 'wumpus', '##es', 'are', 'not', 'wooden', '.']
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(reference_vocabulary(version))}
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                    max_input_chars_per_word=100))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tk.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", pair="[BOS] $A $B", special_tokens=[("[BOS]", vocab["[BOS]"])])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]",
        add_bos_token=True, padding_side="left", model_max_length=1024,
    )
    tok.init_kwargs["name_or_path"] = ""
    return tok


def save_reference_tokenizer(folder: str | Path) -> None:
    """Write ``tokenizer.json`` and its config to ``folder`` (loadable by ``AutoTokenizer``)."""
    build_reference_tokenizer().save_pretrained(str(folder))
