"""Step-to-step influence: how much a step's input embeddings move the probability of a later step's tokens.

``I[k, j] = ‖ ∂(Σ_{t ∈ s_k} P_t) / ∂E_{s_j} ‖_F`` (the step-importance paper's Eq. 4), with ``P_t`` the
softmax probability of the actual token ``t`` (predicted from position ``t - 1``) and ``E_{s_j}`` the input
token embeddings of step ``j`` (the ``hook_embed`` output; GPT-2's separate positional embeddings are not
differentiated). Self-influence is 0 and ``I[k, j] = 0`` for ``j > k`` (causality).

The gradient comes from a leaf tensor that a forward hook puts in place of ``hook_embed``'s output. Each
target step is one row of a batch, cut after that step (later tokens cannot matter), each row's objective its
own step's probability sum; the rows are independent, so one backward of the summed objectives gives every
row's gradient. The prompt, which no step's embedding can change, runs once without gradients and the rows
read its cached keys and values (:func:`~reasonlens.runtime.run_continuations`).

>>> from reasonlens.model import load_model
>>> from reasonlens.ontology import generate
>>> from reasonlens.importance.chains import chains_from_examples
>>> model = load_model("reasonlens-main")
>>> chain = chains_from_examples(model, generate(1, hops=2, seed=3))[0]
>>> infl = influence_matrix(model, chain)
>>> below = torch.ones(5, 5, dtype=torch.bool).tril(-1)
>>> infl.shape, bool(infl[~below].eq(0).all()), bool(infl[below].gt(0).all())
(torch.Size([5, 5]), True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.importance.chains import Chain
from reasonlens.validation import check_context, check_int

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

InfluenceMethod = Literal["gradient", "gradient_x_input", "integrated_gradients"]
INFLUENCE_METHODS: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients")


def check_influence_method(method: object) -> None:
    """A :class:`ReasonlensError` for an unknown influence method."""
    if not isinstance(method, str) or method not in INFLUENCE_METHODS:
        raise ReasonlensError(f"unknown influence method {method!r}; choose from {list(INFLUENCE_METHODS)}")


def influence_matrix(model: TransformerBridge, chain: Chain, keep: Sequence[int] | None = None, *,
                     method: InfluenceMethod = "gradient", ig_steps: int = 5,
                     batch_size: int = 16) -> Float[Tensor, "step step"]:
    """``I[k, j]``, the influence of kept step ``j`` on kept step ``k``, over ``x ∘ T`` with ``T`` the steps in
    ``keep`` (all steps when None), indexed by position in ``T``.

    ``method``: ``"gradient"`` (the gradient's Frobenius norm), ``"gradient_x_input"`` (``‖g ⊙ E‖_F``) or
    ``"integrated_gradients"`` (``‖(E - b) ⊙ mean_i g(b + α_i (E - b))‖_F`` at the ``ig_steps`` right Riemann
    points ``α_i = i / ig_steps``, the baseline ``b`` the mean token embedding of the kept steps' tokens; only the
    step tokens are interpolated). ``batch_size`` bounds the rows (target steps × IG points) per backward.
    """
    check_influence_method(method)
    check_int(ig_steps, "ig_steps", low=1)
    check_int(batch_size, "batch_size", low=1)
    chain.check(model)
    check_context(model, [len(chain.token_ids(keep))], item="chain", fix="use a shorter chain")
    from reasonlens.runtime import Intervention, KVPrefix, gradient_taps, pad_token_id, run_continuations, saving_hooks

    ids, spans = chain.token_ids(keep), chain.spans(keep)
    n = len(spans)
    out = torch.zeros(n, n)
    prefix = KVPrefix.of(model, chain.prompt_ids)
    start = 0 if prefix is not None else chain.prompt_len  # the first step token's column in a row
    shift = chain.prompt_len - start  # token position - column
    rows_ids = ids[chain.prompt_len - start:]
    alphas = [i / ig_steps for i in range(1, ig_steps + 1)] if method == "integrated_gradients" else [1.0]
    rows = [(k, a) for k in range(1, n) for a in alphas]
    device = model.cfg.device
    embedded: dict[str, Tensor] = {}
    with torch.no_grad():
        run_continuations(model, prefix, [rows_ids], pad_token_id(model),
                          fwd_hooks=saving_hooks(embedded, {"hook_embed": lambda act: act[0]}))
    clean = embedded["hook_embed"]
    base = clean[start:].mean(0)
    summed: dict[int, Tensor] = {}  # target step -> gradient summed over its IG points so far
    seen: dict[int, int] = {}
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo:lo + batch_size]
        cut = [rows_ids[:spans[k].end - shift] for k, _ in chunk]
        width = max(map(len, cut))
        point = clean[None, :width].repeat(len(chunk), 1, 1)  # each row's embeddings (a prefix of the chain's)
        if method == "integrated_gradients":
            alpha = torch.tensor([a for _, a in chunk], device=device)
            point[:, start:] = base + alpha[:, None, None].to(point.dtype) * (point[:, start:] - base)
        real = (torch.arange(width)[None, :] < torch.tensor([len(c) for c in cut])[:, None])[..., None]
        taps, store = gradient_taps(["hook_embed"])
        with torch.enable_grad():
            logits = run_continuations(model, prefix, cut, pad_token_id(model),
                                       fwd_hooks=[Intervention("hook_embed", "set", point, mask=real).as_hook(), *taps])
            total = logits.new_zeros((), dtype=torch.float32)
            for r, (k, _) in enumerate(chunk):
                a, b = spans[k].start - shift, spans[k].end - shift
                probs = logits[r, a - 1:b - 1].float().softmax(-1)
                targets = torch.tensor(rows_ids[a:b], device=device)
                total = total + probs.gather(-1, targets[:, None])[:, 0].sum()
            (grad,) = torch.autograd.grad(total, store["hook_embed"])
        for r, (k, _) in enumerate(chunk):
            g_row = grad[r, :spans[k].end - shift].float().cpu()
            summed[k] = summed.get(k, 0) + g_row
            seen[k] = seen.get(k, 0) + 1
            if seen[k] < len(alphas):
                continue
            g = summed.pop(k) / len(alphas)
            e = clean[:len(g)].float().cpu()
            if method == "gradient_x_input":
                g = g * e
            elif method == "integrated_gradients":
                g = g * (e - base.float().cpu())
            for j in range(k):
                out[k, j] = torch.linalg.norm(g[spans[j].start - shift:spans[j].end - shift])
    return out
