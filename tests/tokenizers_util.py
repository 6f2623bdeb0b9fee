"""Tiny subword tokenizers trained locally on PrOntoQA text, for tests that need realistic tokenization.

With a vocabulary of a few hundred, concept names split into several pieces (``Ġ w umpus``, ``▁w umpus.``)
as rare words do in real models, while common words (``Ġis``, ``▁are``) are single tokens.

    from tokenizers_util import subword_tokenizers
    tok = subword_tokenizers()["metaspace"]
"""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from reasonlens.ontology import generate
from reasonlens.ontology.prompt import format_completion, format_prompt


def prontoqa_texts(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` prompt + completion texts per (style, ontology kind), one demonstration each."""
    texts = []
    for style in ("prontoqa", "dutta"):
        for kind in ("fictional", "true", "false"):
            exs = generate(n + 1, hops=(1, 2, 3), kind=kind, style=style, seed=seed)
            texts += [format_prompt(e, [d]) + format_completion(e) for e, d in zip(exs[1:], exs)]
    return texts


def byte_level_bpe(texts: list[str], *, vocab_size: int = 300,
                   add_prefix_space: bool = False) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE (``Ġword``), no BOS added. With ``add_prefix_space`` offsets are
    trimmed of the leading space; without, they include it (as GPT-2's ``tokenizer.json`` does)."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=add_prefix_space)
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def metaspace_bpe(texts: list[str], *, vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A Llama / Qwen-sentencepiece style BPE (``▁word``) that prepends ``<s>``."""
    tk = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@cache
def subword_tokenizers() -> dict[str, PreTrainedTokenizerFast]:
    """The test subword tokenizers by name, trained once per process (well under a second)."""
    texts = prontoqa_texts()
    return {
        "byte-level": byte_level_bpe(texts),
        "byte-level-prefix-space": byte_level_bpe(texts, add_prefix_space=True),
        "metaspace": metaspace_bpe(texts),
    }


class SlowTokenizer(PreTrainedTokenizer):
    """A minimal slow (pure-Python) whitespace tokenizer: it has no character offsets."""

    def __init__(self, **kwargs: object) -> None:
        self._vocab = {"[UNK]": 0, "polly": 1, "is": 2, "a": 3, "wumpus": 4}
        super().__init__(unk_token="[UNK]", **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str) -> list[str]:
        return text.lower().split()

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, 0)

    def _convert_id_to_token(self, index: int) -> str:
        return list(self._vocab)[index]
