"""Training recipe of the shipped reference models (``reasonlens train``).

Two phases on one Llama-style model (RMSNorm, rotary positions, gated SiLU MLP):

1. **background**: plain statements of the real taxonomy and closed-book questions about it, so the
   model holds a pretraining prior ("cats are furry");
2. **chain of thought**: PrOntoQA questions on fictional, true and false ontologies (the in-context facts
   must win over the prior), 1-4 hops, with background replay so the prior survives.

The loss is next-token cross-entropy on the completion only, with the *decision* tokens (the steps that
carry a property and its polarity, and the label) weighted up: measured here, an unweighted loss copies
every step but leaves the polarity of the property rule at chance. Training is judged by decoding, not by
loss: every ``eval_every`` steps a checkpoint is saved and a fixed held-out set is decoded greedily from it;
label and exact-proof accuracy, the decision where chains first go wrong and, teacher-forced, how often the model
stops at the concept with the queried property and continues elsewhere are logged. The intermediate
checkpoints also give the under-trained headroom model.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from reasonlens.errors import ReasonlensError
from reasonlens.ontology.background import background_passage, closed_book_prompt, closed_book_questions
from reasonlens.ontology.generator import GeneratorConfig, generate
from reasonlens.ontology.prompt import ANSWER_NOW, format_prompt
from reasonlens.ontology.realize import choose_form
from reasonlens.ontology.types import Example
from reasonlens.results import ConfigDict

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM  # training runs the Hugging Face model, not a TransformerBridge

# The training-only read-out of the queried property, saved beside a checkpoint so that a later stage continues it.
READOUT_FILE = "query_readout.safetensors"

PRECISIONS = ("float32", "bfloat16")
TRAIN_DATA_SEED_OFFSET = 1_000_000  # data stream seed = this + model seed; questions: see question_seeds


@dataclass
class ArchitectureConfig(ConfigDict):
    """Size of the Llama-style reference model."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    max_positions: int = 1024


@dataclass
class TrainConfig(ConfigDict):
    """Everything that determines a reference model; the same config and seed give the same weights."""

    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    seed: int = 0
    background_steps: int = 300
    cot_steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    decision_weight: float = 4.0
    background_replay: float = 0.15
    few_shot_p: float = 0.1
    redundant_step_p: float = 0.1
    kind_weights: dict[str, float] = field(default_factory=lambda: {"fictional": 0.5, "true": 0.2, "false": 0.3})
    hops: tuple[int, ...] = (1, 2, 3, 4)
    curriculum_steps: int = 600  # first CoT steps without off-path concepts / distractors
    min_extra_concepts: int = 0  # after the curriculum, fewest concepts past the answer (most: 2)
    eval_every: int = 250
    eval_n: int = 48
    threads: int = 0  # 0: torch default
    form_weight: float = 1.0  # weight of the first token of each restated rule: which context sentence to copy
    isa_rule_weight: float = 1.0  # weight of a restated "is a" rule (property rules carry decision_weight)
    stop_after: int | None = None  # end after this many steps (the learning-rate schedule still spans them all)
    init_from: str | None = None  # continue from this checkpoint (a later stage of a recipe)
    # Auxiliary loss (training only, the head is not part of the model): a linear read-out of the residual stream after
    # ``query_aux_layer`` blocks predicts the queried property at every completion position, weighted
    # ``query_aux_weight`` against the language-model loss (0: off).
    query_aux_weight: float = 0.0
    query_aux_layer: int = 3
    # Continue the read-out saved beside ``init_from`` (when there is one) instead of starting a fresh random one,
    # whose loss drives 94-97% of the model's gradient in a stage's first steps.
    continue_read_out: bool = True
    question_offset: int = 0  # a later stage draws questions after the earlier stages' ones
    # "bfloat16": the blocks' matrix products run under bfloat16 autocast (weights, residual stream, attention,
    # output head, losses and optimizer stay float32), about twice as fast on a CPU with bfloat16 units.
    precision: str = "float32"
    # Generator knobs for the questions after the curriculum (e.g. reasonlens.ontology.generator.V1_SIZES: real
    # PrOntoQA v1's ontology sizes); empty: the first recipe's (at most two concepts past the answer, one below).
    sizes: dict[str, int] = field(default_factory=dict)
    # Probability that a CoT question after the curriculum is an answer-now sequence instead: the prompt, a random
    # ordered subset of its gold chain (none of it .. all of it), ANSWER_NOW and the label, the label the only target.
    answer_now_p: float = 0.0
    max_shots: int = 1  # demonstrations in a few-shot question (1..max_shots, drawn when above 1)
    vocabulary: int = 1  # the reference tokenizer's version (reasonlens.tokenizer.VOCABULARY_VERSIONS)
    device: str = "cpu"  # "cuda" trains on a GPU (checkpoints are saved and monitored on the CPU either way)

    @property
    def data_seed(self) -> int:
        """Seed of the training data stream (background sampling, batch composition)."""
        return TRAIN_DATA_SEED_OFFSET + self.seed

    @property
    def question_seeds(self) -> tuple[int, int]:
        """Half-open range of generator seeds of the CoT training questions (one seed per question);
        held-out evaluation must use a seed outside it."""
        lo = self.data_seed * 7919 + self.question_offset
        return lo, lo + self.cot_steps * self.batch_size

    @property
    def next_question_offset(self) -> int:
        """The ``question_offset`` of a stage that continues this one on fresh questions."""
        return self.question_offset + self.cot_steps * self.batch_size


class _Encoder:
    """Tokenizes training sequences with per-token loss weights."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def sequence(self, pieces: list[tuple[str, float]]) -> tuple[list[int], list[float]]:
        """BOS + pieces + EOS; each piece's weight applies to its tokens as prediction targets."""
        ids, weights = [self.bos], [0.0]
        for text, w in pieces:
            t = self.ids(text)
            ids += t
            weights += [w] * len(t)
        ids.append(self.eos)
        weights.append(1.0)
        return ids, weights

    def cot_example(self, ex: Example, demos: list[Example], decision_weight: float, form_weight: float = 1.0,
                    isa_rule_weight: float = 1.0):
        ids, weights = self.sequence([(format_prompt(ex, demos), 0.0)])
        ids, weights = ids[:-1], weights[:-1]  # completion follows
        for s in ex.cot:
            important = s.fact.kind == "property" and s.role != "redundant"
            t = self.ids(" " + s.text)
            w = [decision_weight if important else 1.0] * len(t)
            if s.role == "rule_copy" and s.fact.kind != "property":
                w = [isa_rule_weight] * len(t)
            if s.role == "rule_copy":
                w[0] = max(w[0], form_weight)
            ids, weights = ids + t, weights + w
        t = self.ids(" " + ex.answer)
        return ids + t + [self.eos], weights + [decision_weight] * len(t) + [1.0]

    def answer_now_example(self, ex: Example, demos: list[Example], steps: list[int]):
        """The prompt, the gold chain's steps ``steps`` (in order), :data:`ANSWER_NOW` and the label: only the
        label is a target (the shortened chain is no proof to imitate)."""
        chain = "".join(" " + ex.cot[i].text for i in steps)
        return self.sequence([(format_prompt(ex, demos) + chain + ANSWER_NOW, 0.0), (" " + ex.answer, 1.0)])


class _Sampler:
    """Streams training sequences: background passages, closed-book questions, CoT questions."""

    def __init__(self, cfg: TrainConfig, encoder: _Encoder):
        self.cfg, self.enc = cfg, encoder
        self.rng = random.Random(cfg.data_seed if not cfg.question_offset else f"{cfg.data_seed}-{cfg.question_offset}")
        self.closed_book = closed_book_questions()
        self.counter = 0

    def background(self):
        if self.rng.random() < 0.5:
            return *self.enc.sequence([(background_passage(self.rng), 1.0)]), -1
        fact, truth = self.rng.choice(self.closed_book)
        prompt = closed_book_prompt(fact, choose_form("prontoqa", self.rng))
        return *self.enc.sequence([(prompt, 0.0), (" True" if truth else " False", self.cfg.decision_weight)]), -1

    def cot(self, step: int):
        cfg = self.cfg
        kinds, weights = zip(*cfg.kind_weights.items())
        kind = self.rng.choices(kinds, weights)[0]
        warm = step < cfg.curriculum_steps
        sizes = {"extra_concepts": 0 if warm else 2, "min_extra_concepts": 0 if warm else cfg.min_extra_concepts,
                 **({} if warm else cfg.sizes)}
        gen = GeneratorConfig(kind=kind, hops=cfg.hops, ordering=("postorder", "preorder", "random"), **sizes,
                              distractor=not warm or self.rng.random() < 0.5,
                              redundant_step_p=0.0 if warm else cfg.redundant_step_p)
        n_demos = 1 if (not warm and self.rng.random() < cfg.few_shot_p) else 0
        if n_demos and cfg.max_shots > 1:
            n_demos = self.rng.randint(1, cfg.max_shots)
        answer_now = not warm and cfg.answer_now_p > 0 and self.rng.random() < cfg.answer_now_p
        exs = generate(1 + n_demos, gen, seed=cfg.question_seeds[0] + self.counter)
        self.counter += 1
        if answer_now:
            steps = sorted(self.rng.sample(range(len(exs[0].cot)), self.rng.randint(0, len(exs[0].cot))))
            ids, weights = self.enc.answer_now_example(exs[0], exs[1:], steps)
        else:
            ids, weights = self.enc.cot_example(exs[0], exs[1:], cfg.decision_weight, cfg.form_weight,
                                                cfg.isa_rule_weight)
        return ids, weights, self.enc.tok.convert_tokens_to_ids(exs[0].query.fact.predicate)

    def sequence(self, step: int) -> tuple[list[int], list[float], int]:
        """Token ids, per-token loss weights and the queried property's token id (-1: not a question)."""
        if step < self.cfg.background_steps or self.rng.random() < self.cfg.background_replay:
            return self.background()
        return self.cot(step - self.cfg.background_steps)

    def batches(self, total: int, pool: int = 8):
        """Yield ``total`` batches; sequences are drawn ``pool`` batches at a time and grouped by length
        so that little compute goes to padding."""
        step = 0
        while step < total:
            n = min(pool, total - step)
            seqs = [self.sequence(step + i // self.cfg.batch_size) for i in range(n * self.cfg.batch_size)]
            seqs.sort(key=lambda s: len(s[0]))
            chunks = [seqs[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size] for i in range(n)]
            self.rng.shuffle(chunks)
            for chunk in chunks:
                yield chunk
            step += n


def _float32_sdpa(module, query, key, value, attention_mask, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes in bfloat16 natively (``avx512_bf16`` or ``amx_bf16`` among its flags), read from
    ``/proc/cpuinfo`` (or the ``cpuinfo`` text given); ``None`` where that cannot be read (not Linux).
    Without those units bfloat16 autocast is emulated and slower than float32 (docs/benchmarks.md).

    >>> cpu_has_bfloat16("flags : fpu avx512f avx512_bf16 amx_tile"), cpu_has_bfloat16("flags : fpu avx512f")
    (True, False)
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return any(f in flags for f in BFLOAT16_CPU_FLAGS)


def _warn_if_bfloat16_is_emulated(precision: str, cpu_bfloat16_units: bool | None) -> None:
    if precision == "bfloat16" and cpu_bfloat16_units is False:
        import warnings

        warnings.warn("this CPU has no bfloat16 units (neither of the flags " + " / ".join(BFLOAT16_CPU_FLAGS)
                      + "): bfloat16 autocast is emulated, about 1.5x slower per step than float32 here "
                      "(docs/benchmarks.md); precision='float32' is faster on this machine but trains other weights "
                      "than bfloat16", stacklevel=3)


def _check_config(cfg: TrainConfig) -> None:
    """Reject a config :func:`train` cannot run before it loads or builds a model."""
    import torch

    from reasonlens.tokenizer import VOCABULARY_VERSIONS

    if cfg.precision not in PRECISIONS:
        raise ReasonlensError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    if not 0.0 <= cfg.answer_now_p <= 1.0 or cfg.max_shots < 1:
        raise ReasonlensError(f"answer_now_p must be a probability and max_shots >= 1, got {cfg.answer_now_p} and "
                              f"{cfg.max_shots}")
    if cfg.vocabulary not in VOCABULARY_VERSIONS:
        raise ReasonlensError(f"vocabulary must be one of {VOCABULARY_VERSIONS}, got {cfg.vocabulary!r}")
    unknown = set(cfg.sizes) - {f.name for f in fields(GeneratorConfig)}
    if unknown:
        raise ReasonlensError(f"sizes has unknown generator option(s) {sorted(unknown)}")
    if cfg.answer_now_p > 0 and cfg.vocabulary < 2:
        raise ReasonlensError("answer_now_p > 0 needs vocabulary=2 (version 1 has no token for the answer-now suffix)")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ReasonlensError(f"device={cfg.device!r} but no CUDA GPU is available here; train with device='cpu'")
    n_blocks = cfg.architecture.n_layers
    if cfg.init_from:
        saved = Path(cfg.init_from) / "config.json"
        if not saved.exists():
            raise ReasonlensError(f"init_from={cfg.init_from!r} is not a saved checkpoint (no config.json there); "
                                  "pass the 'final' or 'step-*' folder of an earlier stage")
        n_blocks = json.loads(saved.read_text())["num_hidden_layers"]
    if cfg.query_aux_weight < 0 or (cfg.query_aux_weight > 0 and not 0 <= cfg.query_aux_layer <= n_blocks):
        raise ReasonlensError(f"query_aux_weight must be >= 0 and query_aux_layer in 0..{n_blocks} "
                              f"(blocks before the read-out), got {cfg.query_aux_weight} and {cfg.query_aux_layer}")


def _use_precision(model: LlamaForCausalLM, precision: str) -> None:
    """Set the attention ``_batch_loss`` needs for ``precision``: the standard SDPA for float32 (the default of a
    fresh or loaded model), SDPA in float32 under bfloat16 autocast, since on CPU the bfloat16 flash-attention
    backward is 2.5x slower than the float32 one (and float32 keeps the softmax exact)."""
    if precision == "bfloat16":
        from transformers import AttentionInterface

        AttentionInterface.register("reasonlens_float32_sdpa", _float32_sdpa)
    model.set_attn_implementation("reasonlens_float32_sdpa" if precision == "bfloat16" else "sdpa")


def _batch_loss(model: LlamaForCausalLM, aux_head, ids, w, query, cfg: TrainConfig):
    """The training loss of one collated batch: weighted next-token cross-entropy, plus the read-out's term.
    With ``cfg.precision == "bfloat16"`` the blocks run under autocast (the model's attention set by
    :func:`_use_precision`); the output head and both losses are float32."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16"):
        forward = model.model(input_ids=ids, output_hidden_states=aux_head is not None)
    logits = model.lm_head(forward.last_hidden_state.float())[:, :-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    loss = (ce.view_as(w[:, 1:]) * w[:, 1:]).sum() / w[:, 1:].sum().clamp_min(1.0)
    if aux_head is not None:  # the queried property, read from the residual at every completion position
        where = (w[:, 1:] > 0) & (query[:, None] >= 0)
        if where.any():
            hidden = forward.hidden_states[cfg.query_aux_layer][:, :-1][where].float()
            target = query[:, None].expand_as(where)[where]
            loss = loss + cfg.query_aux_weight * F.cross_entropy(aux_head(hidden), target)
    return loss


def _collate(batch, pad_id: int):
    import torch

    # Right padding under a causal mask: real tokens never attend to the pads after them, and pads carry
    # no loss weight, so no attention mask is needed (which keeps the fast attention path).
    length = max(len(ids) for ids, *_ in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    w = torch.zeros((len(batch), length))
    for i, (seq, wt, _) in enumerate(batch):
        ids[i, : len(seq)] = torch.tensor(seq)
        w[i, : len(seq)] = torch.tensor(wt)
    return ids, w, torch.tensor([query for *_, query in batch])


def build_model(arch: ArchitectureConfig, tokenizer, seed: int):
    """A freshly initialised Llama-style ``LlamaForCausalLM`` for the reference vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch.d_model, intermediate_size=arch.d_mlp,
        num_hidden_layers=arch.n_layers, num_attention_heads=arch.n_heads, num_key_value_heads=arch.n_heads,
        max_position_embeddings=arch.max_positions, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="silu", attention_bias=False, mlp_bias=False,
    )
    return LlamaForCausalLM(config)


def checkpoint_accuracy(checkpoint: str | Path, examples: list[Example]) -> dict:
    """Greedy-decode ``examples`` with a saved checkpoint: label and exact-proof accuracy, where chains first go
    wrong (counts by decision, see :func:`reasonlens.evaluate.first_error`), and the teacher-forced rule choices
    (:func:`reasonlens.evaluate.rule_choices`): how often it stops where it should, and continues where it should
    (None where the examples offer no such choice)."""
    from collections import Counter

    from reasonlens.evaluate import evaluate_examples, rule_choices
    from reasonlens.model import load_model

    model = load_model(str(checkpoint))
    records = evaluate_examples(model, examples)
    choices = rule_choices(model, examples)
    n = len(records)

    def share(decision: str) -> float | None:
        made = [c.correct for c in choices if c.decision == decision]
        return sum(made) / len(made) if made else None

    return {"label_accuracy": sum(r.label_correct for r in records) / n,
            "proof_accuracy": sum(r.proof_exact for r in records) / n,
            "first_errors": dict(Counter(r.first_error for r in records if r.first_error)),
            "stop_accuracy": share("stop"), "continue_accuracy": share("continue")}


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a reference model; write ``out_dir/final`` and ``out_dir/step-*`` checkpoints and a log.

    Returns the training log (per-evaluation accuracies and timings).
    """
    import torch
    from tqdm.auto import tqdm

    from reasonlens.tokenizer import build_reference_tokenizer

    _check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = build_reference_tokenizer(cfg.vocabulary)
    enc = _Encoder(tok)
    if cfg.init_from:
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(cfg.init_from)
        if model.config.vocab_size < len(tok):  # a later vocabulary version adds words at the end
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                model.resize_token_embeddings(len(tok), mean_resizing=True)
    else:
        model = build_model(cfg.architecture, tok, cfg.seed)
    model.to(cfg.device)
    model.train()
    sampler = _Sampler(cfg, enc)
    schedule = cfg.background_steps + cfg.cot_steps
    total = min(schedule, cfg.stop_after or schedule)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, schedule - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    _use_precision(model, cfg.precision)
    cpu_bfloat16_units = cpu_has_bfloat16()
    _warn_if_bfloat16_is_emulated(cfg.precision, cpu_bfloat16_units)
    aux_head = None
    if cfg.query_aux_weight > 0:
        with torch.random.fork_rng():  # the head's own seed, without reseeding the caller's generator
            torch.manual_seed(cfg.seed)
            aux_head = torch.nn.Linear(model.config.hidden_size, len(tok)).to(cfg.device)
        carried = Path(cfg.init_from) / READOUT_FILE if cfg.init_from and cfg.continue_read_out else None
        if carried is not None and carried.exists():  # the previous stage's read-out, not a fresh random one
            from safetensors.torch import load_file

            aux_head.load_state_dict(load_file(str(carried), device=cfg.device))
        opt.add_param_group({"params": aux_head.parameters()})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    eval_sets = {
        kind: generate(cfg.eval_n, kind=kind, hops=cfg.hops, ordering=("postorder", "preorder", "random"),
                       seed=cfg.data_seed + 500_000, **cfg.sizes)
        for kind in ("fictional", "false")
    }
    log: dict = {"config": asdict(cfg), "cpu_bfloat16_units": cpu_bfloat16_units, "evals": []}
    start = time.time()
    tokens = 0
    running = None
    # Batches come from the whole schedule's stream, so stopping early changes none of them.
    bar = tqdm(itertools.islice(sampler.batches(schedule), total), total=total, disable=not progress, desc="train")
    for step, batch in enumerate(bar):
        ids, w, query = (t.to(cfg.device) for t in _collate(batch, tok.pad_token_id))
        tokens += sum(len(seq) for seq, *_ in batch)
        loss = _batch_loss(model, aux_head, ids, w, query, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the language model's; the read-out is apart
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        last = step == total - 1
        if step >= cfg.background_steps and ((step + 1) % cfg.eval_every == 0 or last):
            entry = {"step": step + 1, "loss": running, "seconds": time.time() - start, "tokens": tokens}
            ckpt = out / ("final" if last else f"step-{step + 1}")
            model.save_pretrained(ckpt)  # the attention implementation is not saved: checkpoints load standard
            tok.save_pretrained(ckpt)
            if aux_head is not None:
                from safetensors.torch import save_file

                save_file(aux_head.state_dict(), str(ckpt / READOUT_FILE))
            for kind, exs in eval_sets.items():
                entry[kind] = checkpoint_accuracy(ckpt, exs)
            log["evals"].append(entry)
            (out / "train_log.json").write_text(json.dumps(log, indent=1))
            bar.write(json.dumps({k: entry[k] for k in ("step", "loss", "seconds", "fictional", "false")}))
    log["seconds"] = time.time() - start
    log["tokens"] = tokens
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return log
