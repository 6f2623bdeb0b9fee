"""Every patching site against a true-effect oracle on Llama, Qwen2 (grouped-query attention), Gemma-2 and GPT-2,
and on GPT-NeoX's parallel attention + MLP blocks (no ``resid_mid`` there).

The oracle shares nothing with the engine: it loads a fresh plain Hugging Face model from the same folder (never
wrapped by a bridge), captures the source activations in that model, and makes each patch by hand with torch
forward hooks on its modules, one forward per patch. What each site means there:

- ``resid_pre`` / ``resid_post``: the decoder layer's input / output;
- ``resid_mid``: the layer input plus the attention branch output (the attention branch output is edited so
  that the sum equals the source);
- ``attn_out`` / ``mlp_out``: the branch outputs added to the residual (after Gemma-2's post-norms);
- ``z``: the input of ``o_proj`` (GPT-2 ``attn.c_proj``) per head slice; ``q`` / ``k`` / ``v``: the output of
  ``q_proj`` / ``k_proj`` / ``v_proj`` (GPT-2: ``c_attn`` split in three; GPT-NeoX: ``query_key_value``, split
  per head), per head (per key/value head under grouped-query attention), before rotary;
- ``neuron``: the input of ``down_proj`` (GPT-2 ``mlp.c_proj``);
- ``pattern``: z = pattern_source @ v recomputed by hand at the patched query positions and written into the
  ``o_proj`` input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from model_util import write_checkpoint
from torch import Tensor, nn

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.engine import attribution_patch, patch
from reasonlens.runtime import HEAD_SITES, SITES

ORACLE_ARCHS = ("llama", "qwen2", "gemma2", "gpt2")
METRICS = ("kl", "logit_diff")
N_LAYERS, PAD = 3, 2


# ---------------------------------------------------------------------------------------------------------- oracle


def _replace_output(fn: Callable[[Tensor], Tensor]):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)
    return hook


def _replace_input(fn: Callable[[Tensor], Tensor]):
    def hook(module, args):
        return (fn(args[0]), *args[1:])
    return hook


def _put(act: Tensor, source: Tensor, where: Tensor, unit: int | None) -> Tensor:
    """``act`` with ``source`` written where ``where`` [batch, pos] (and, on axis 2, ``unit``) selects."""
    out = act.clone()
    if unit is None:
        out[where] = source[where].to(out.dtype)
    else:
        out[:, :, unit][where] = source[:, :, unit][where].to(out.dtype)
    return out


@dataclass
class Oracle:
    """A plain Hugging Face model, its modules per site, and hand-made patches."""

    hf: nn.Module

    @classmethod
    def load(cls, folder) -> Oracle:
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval())

    @property
    def kind(self) -> str:
        return self.hf.config.model_type

    @property
    def heads(self) -> tuple[int, int, int]:
        """(query heads, key/value heads, head dimension)."""
        cfg = self.hf.config
        n = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or n
        return n, kv, getattr(cfg, "head_dim", None) or cfg.hidden_size // n

    def parts(self, layer: int) -> dict[str, nn.Module]:
        """The modules of one layer: the layer, the attention module (returns the pattern), the modules whose
        outputs are added to the residual, the q/k/v projections (GPT-2, GPT-NeoX: the joint one), o_proj and
        down_proj."""
        if self.kind == "gpt2":
            block = self.hf.transformer.h[layer]
            qkv = block.attn.c_attn
            return dict(layer=block, attn=block.attn, attn_out=block.attn, mlp_out=block.mlp, q=qkv, k=qkv, v=qkv,
                        o=block.attn.c_proj, down=block.mlp.c_proj)
        if self.kind == "gpt_neox":
            block = self.hf.gpt_neox.layers[layer]
            qkv = block.attention.query_key_value
            return dict(layer=block, attn=block.attention, attn_out=block.attention, mlp_out=block.mlp, q=qkv,
                        k=qkv, v=qkv, o=block.attention.dense, down=block.mlp.dense_4h_to_h)
        block = self.hf.model.layers[layer]
        attn = block.self_attn
        post = hasattr(block, "post_feedforward_layernorm")  # Gemma-2: the norm outputs are what is added
        return dict(layer=block, attn=attn, attn_out=block.post_attention_layernorm if post else attn,
                    mlp_out=block.post_feedforward_layernorm if post else block.mlp, q=attn.q_proj, k=attn.k_proj,
                    v=attn.v_proj, o=attn.o_proj, down=block.mlp.down_proj)

    def _qkv(self, name: str, out: Tensor) -> Tensor:
        """The per-head view [batch, pos, head, d_head] of ``name`` (q, k or v) inside a projection output."""
        n, kv, dh = self.heads
        i = "qkv".index(name)
        if self.kind == "gpt2":  # [q | k | v]
            return out[..., i * n * dh:(i + 1) * n * dh].unflatten(-1, (n, dh))
        if self.kind == "gpt_neox":  # per head [q | k | v]
            return out.unflatten(-1, (n, 3, dh))[..., i, :]
        return out.unflatten(-1, (n if name == "q" else kv, dh))

    def _heads_edit(self, name: str, fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """An edit of a projection output through its per-head view of ``name``."""
        def edit(out: Tensor) -> Tensor:
            out = out.clone()
            view = self._qkv(name, out)
            view.copy_(fn(view.clone()))
            return out
        return edit

    def forward(self, tokens: Tensor, mask: Tensor, hooks: list) -> Tensor:
        """Last-position logits of a left-padded batch with ``hooks`` [(module, "pre" | "post", hook)]."""
        handles = [m.register_forward_pre_hook(h) if kind == "pre" else m.register_forward_hook(h)
                   for m, kind, h in hooks]
        try:
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            return self.hf(tokens, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        finally:
            for h in handles:
                h.remove()

    def capture(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, dict[tuple[str, int], Tensor]]:
        """Last-position logits and every site's activation at every layer (site layout as the engine's)."""
        acts: dict[tuple[str, int], Tensor] = {}
        hooks = []

        def keep(key, fn=lambda x: x):
            def store(x):
                acts[key] = fn(x).detach().clone()
                return x
            return store

        def keep_pattern(key):
            def hook(module, args, output):
                acts[key] = output[1].detach().clone()
            return hook

        for layer in range(self.hf.config.num_hidden_layers):
            p = self.parts(layer)
            hooks += [(p["layer"], "pre", _replace_input(keep(("resid_pre", layer)))),
                      (p["layer"], "post", _replace_output(keep(("resid_post", layer)))),
                      (p["attn_out"], "post", _replace_output(keep(("attn_out", layer)))),
                      (p["mlp_out"], "post", _replace_output(keep(("mlp_out", layer)))),
                      (p["attn"], "post", keep_pattern(("pattern", layer))),
                      (p["o"], "pre", _replace_input(keep(("z", layer), lambda x: x.reshape(*x.shape[:2],
                                                                                             self.heads[0], -1)))),
                      (p["down"], "pre", _replace_input(keep(("neuron", layer))))]
            for name in "qkv":
                hooks.append((p[name], "post", _replace_output(self._heads_edit(name, keep((name, layer))))))
        with torch.no_grad():
            logits = self.forward(tokens, mask, hooks)
        for layer in range(self.hf.config.num_hidden_layers):
            acts["resid_mid", layer] = acts["resid_pre", layer] + acts["attn_out", layer]  # not on GPT-NeoX
        return logits, acts

    def patch_hooks(self, site: str, layer: int, where: Tensor, unit: int | None, source: dict) -> list:
        """Hooks writing ``source[site, layer]`` where ``where`` [batch, pos] and ``unit`` select."""
        p, src = self.parts(layer), source[site, layer]
        if site == "resid_pre":
            return [(p["layer"], "pre", _replace_input(lambda x: _put(x, src, where, unit)))]
        if site == "resid_post":
            return [(p["layer"], "post", _replace_output(lambda x: _put(x, src, where, unit)))]
        if site in ("attn_out", "mlp_out"):
            return [(p[site], "post", _replace_output(lambda x: _put(x, src, where, unit)))]
        if site == "resid_mid":
            seen = {}

            def remember(x):
                seen["input"] = x
                return x
            return [(p["layer"], "pre", _replace_input(remember)),
                    (p["attn_out"], "post", _replace_output(lambda x: _put(x, src - seen["input"], where, unit)))]
        if site == "neuron":
            return [(p["down"], "pre", _replace_input(lambda x: _put(x, src, where, unit)))]
        if site in ("q", "k", "v"):
            return [(p[site], "post", _replace_output(self._heads_edit(site, lambda x: _put(x, src, where, unit))))]
        n, kv, _ = self.heads
        if site == "z":
            return [(p["o"], "pre", _replace_input(
                lambda x: _put(x.reshape(*x.shape[:2], n, -1), src, where, unit).reshape(x.shape)))]
        assert site == "pattern"
        values = {}

        def keep_v(x):
            values["v"] = x
            return x

        def write_z(x):
            z = x.reshape(*x.shape[:2], n, -1).clone()
            v = values["v"].repeat_interleave(n // kv, dim=2)  # [batch, key, head, d_head]
            new = torch.einsum("bhqk,bkhd->bqhd", src.to(v.dtype), v)
            for h in range(n) if unit is None else [unit]:
                z[:, :, h][where] = new[:, :, h][where]
            return z.reshape(x.shape)
        return [(p["v"], "post", _replace_output(self._heads_edit("v", keep_v))),
                (p["o"], "pre", _replace_input(write_z))]


# ---------------------------------------------------------------------------------------------------------- data


@dataclass
class Batch:
    clean: Tensor
    corrupted: Tensor
    mask: Tensor
    answer: Tensor
    wrong: Tensor


def _batch(oracle: Oracle, seed: int = 0, n: int = 3, length: int = 7) -> Batch:
    """Random pairs differing at two positions, row 0 left-padded by ``PAD`` tokens; the answer and wrong tokens
    are those whose logit the corruption lowers and raises most (a logit difference far from flat)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(5, 150, (n, length), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(5, 150, (n,), generator=g)
    corrupted[1:, 5] = torch.randint(5, 150, (n - 1,), generator=g)
    mask = torch.ones_like(clean)
    mask[0, :PAD] = 0
    clean[0, :PAD] = corrupted[0, :PAD] = 0
    with torch.no_grad():
        change = oracle.forward(clean, mask, []) - oracle.forward(corrupted, mask, [])
    return Batch(clean, corrupted, mask, change.argmax(-1), change.argmin(-1))


def _metric(name: str, logits: Tensor, clean_logits: Tensor, batch: Batch) -> Tensor:
    """The metric computed by hand: minus KL(P_clean || P) or the answer-minus-wrong logit difference."""
    if name == "kl":
        ref, logp = torch.log_softmax(clean_logits, -1), torch.log_softmax(logits, -1)
        return -(ref.exp() * (ref - logp)).sum(-1)
    rows = torch.arange(len(logits))
    return logits[rows, batch.answer] - logits[rows, batch.wrong]


@dataclass
class Arch:
    name: str
    folder: object
    oracle: Oracle
    batch: Batch
    models: dict

    def model(self, compat: bool = False):
        """The engine's bridge (loaded once per compatibility mode)."""
        if compat not in self.models:
            self.models[compat] = load_model(str(self.folder), compatibility_mode=compat)
        return self.models[compat]

    @functools.cached_property
    def runs(self) -> tuple[tuple[Tensor, dict], tuple[Tensor, dict]]:
        """The oracle's clean and corrupted runs: (last-position logits, activations) each."""
        return (self.oracle.capture(self.batch.clean, self.batch.mask),
                self.oracle.capture(self.batch.corrupted, self.batch.mask))

    def units(self, site: str) -> list[int] | None:
        """Two units of ``site``: the first and last key/value heads, query heads 1 and last, neurons 0 and 77."""
        n, kv, _ = self.oracle.heads
        if site in ("k", "v"):
            return [0, kv - 1]
        if site in HEAD_SITES:
            return [1, n - 1]
        return [0, 77] if site == "neuron" else None


def _arch(name: str, tmp_path_factory) -> Arch:
    # Gemma-2's soft-capped logits are small at weight scale 3: scale 5 keeps its KL scale clear of float32 noise
    folder = write_checkpoint(tmp_path_factory.mktemp(name), name, scale=5.0 if name == "gemma2" else 3.0,
                              n_layers=N_LAYERS)
    oracle = Oracle.load(folder)
    return Arch(name, folder, oracle, _batch(oracle), {})


@pytest.fixture(scope="module", params=ORACLE_ARCHS)
def arch(request, tmp_path_factory) -> Arch:
    return _arch(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def neox(tmp_path_factory) -> Arch:
    """GPT-NeoX with parallel attention and MLP: no mid-block residual."""
    return _arch("neox", tmp_path_factory)


def _oracle_sweep(arch: Arch, site: str, positions: str, direction: str) -> dict[str, Tensor]:
    """Normalised oracle values ``{metric: [example, layer, position cell, unit]}``, one forward per cell."""
    oracle, batch = arch.oracle, arch.batch
    (clean_logits, clean_acts), (corr_logits, corr_acts) = arch.runs
    target, source = (batch.corrupted, clean_acts) if direction == "denoise" else (batch.clean, corr_acts)
    real = batch.mask.bool()
    cells = [real & (torch.arange(real.shape[1]) == p) for p in range(real.shape[1])] if positions == "each" else [real]
    units = arch.units(site) or [None]
    out = {m: torch.zeros(len(target), N_LAYERS, len(cells), len(units)) for m in METRICS}
    for layer in range(N_LAYERS):
        for c, where in enumerate(cells):
            for u, unit in enumerate(units):
                with torch.no_grad():
                    logits = oracle.forward(target, batch.mask, oracle.patch_hooks(site, layer, where, unit, source))
                for m in METRICS:
                    out[m][:, layer, c, u] = _metric(m, logits, clean_logits, batch)
    for m in METRICS:
        m_clean, m_corr = _metric(m, clean_logits, clean_logits, batch), _metric(m, corr_logits, clean_logits, batch)
        out[m] = (out[m] - m_corr.reshape(-1, 1, 1, 1)) / (m_clean - m_corr).reshape(-1, 1, 1, 1)
    return out


def _engine_sweep(arch: Arch, site: str, positions: str, direction: str, metric: str, compat: bool = False,
                  fn=patch):
    batch = arch.batch
    return fn(arch.model(compat), batch.clean, batch.corrupted, attention_mask=batch.mask, metric=metric,
              answer=batch.answer, wrong=batch.wrong, site=site, positions=positions, units=arch.units(site),
              direction=direction, progress=False, batch_size=16)


def _cells(result) -> Tensor:
    return result.values if result.values.ndim == 4 else result.values.unsqueeze(-1)


def _compare(arch: Arch, site: str, compat: bool, atol: float) -> None:
    effect = 0.0
    for positions in ("each", "all"):
        for direction in ("denoise", "noise"):
            expected = _oracle_sweep(arch, site, positions, direction)
            effect = max(effect, float((expected["kl"] - float(direction == "noise")).abs().max()))
            for metric, want in expected.items():
                got = _cells(_engine_sweep(arch, site, positions, direction, metric, compat))
                torch.testing.assert_close(got, want, atol=atol, rtol=0,
                                           msg=lambda m: f"{site} {positions} {direction} {metric}: {m}")
    assert effect > 0.02  # the patches change the output (by 2000 times the tolerance)


# ---------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("site", SITES)
def test_every_site_equals_the_oracle(arch, site):
    """Positions each and all, denoise and noise, KL and logit difference, left-padded: engine == oracle."""
    _compare(arch, site, compat=False, atol=1e-5)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("arch", ["llama", "gpt2"], indirect=True)
def test_compatibility_mode_agrees_with_the_oracle(arch, site):
    """Folded norms and centred weights change the activations, not the normalised effect of a patch (measured
    up to 6e-6 here)."""
    _compare(arch, site, compat=True, atol=2e-5)


@pytest.mark.parametrize("compat", [False, True])
def test_resid_mid_reads_the_residual_and_a_full_patch_restores_the_clean_run(arch, compat):
    model, batch = arch.model(compat), arch.batch
    _, cache = model.run_with_cache(batch.clean, attention_mask=batch.mask)
    for layer in range(N_LAYERS):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_mid"],
                                   cache[f"blocks.{layer}.hook_resid_pre"] + cache[f"blocks.{layer}.hook_attn_out"],
                                   atol=1e-5, rtol=0)
    res = _engine_sweep(arch, "resid_mid", "all", "denoise", "kl", compat)
    torch.testing.assert_close(res.values, torch.ones_like(res.values), atol=1e-5, rtol=0)


def test_attribution_patching_of_resid_mid_equals_the_oracle_gradient(arch):
    """m_target + (source - target) . d metric / d mid-block residual, the gradient taken by autograd through
    the plain model (a zero tensor added to its attention branch output)."""
    oracle, batch = arch.oracle, arch.batch
    (clean_logits, clean_acts), (corr_logits, corr_acts) = arch.runs
    deltas = [torch.zeros_like(clean_acts["resid_mid", layer], requires_grad=True) for layer in range(N_LAYERS)]
    hooks = [(oracle.parts(layer)["attn_out"], "post", _replace_output(lambda x, d=d: x + d))
             for layer, d in enumerate(deltas)]
    for metric in METRICS:
        logits = oracle.forward(batch.corrupted, batch.mask, hooks)
        grads = torch.autograd.grad(_metric(metric, logits, clean_logits, batch).sum(), deltas)
        m_clean = _metric(metric, clean_logits, clean_logits, batch)
        m_corr = _metric(metric, corr_logits, clean_logits, batch)
        got = _engine_sweep(arch, "resid_mid", "each", "denoise", metric, fn=attribution_patch)
        for layer, grad in enumerate(grads):
            diff = clean_acts["resid_mid", layer] - corr_acts["resid_mid", layer]
            estimate = (diff * grad).sum(-1) * batch.mask  # [example, position]
            want = estimate / (m_clean - m_corr)[:, None]
            torch.testing.assert_close(got.values[:, layer], want, atol=1e-5, rtol=0)


def test_grouped_query_kv_sites_sweep_key_value_heads(arch):
    model, batch = arch.model(), arch.batch
    n, kv, _ = arch.oracle.heads
    for site in ("k", "v", "q"):
        res = patch(model, batch.clean, batch.corrupted, attention_mask=batch.mask, site=site, positions="all",
                    layers=[2], progress=False)
        gqa = kv < n and site != "q"
        axis, prefix, count = ("kv_head", "KV", kv) if gqa else ("head", "H", n)
        assert res.axes == ("example", "layer", "position", axis)
        cells = [f"{l}{h}" for l in res.labels["layer"] for h in res.labels[axis]]
        assert cells == [f"L2{prefix}{u}" for u in range(count)]
        assert set(res.to_dataframe().columns) == {"layer", "position", axis, "mean", "stderr"}
    if kv < n:  # the heatmap keeps the key / value head labels
        from reasonlens.plot import head_heatmap

        res = patch(model, batch.clean, batch.corrupted, attention_mask=batch.mask, site="k", positions="all",
                    layers=[1, 2], progress=False)
        assert head_heatmap(res).data[0].customdata[1][1][0] == "L2KV1"
    with pytest.raises(ReasonlensError, match=f"has {kv} key/value heads" if kv < n else f"has {n} heads"):
        patch(model, batch.clean, batch.corrupted, attention_mask=batch.mask, site="k", units=[kv], progress=False)


def test_parallel_attention_has_no_mid_residual_and_its_other_sites_equal_the_oracle(neox):
    batch = neox.batch
    with pytest.raises(ReasonlensError, match="parallel"):
        patch(neox.model(), batch.clean, batch.corrupted, attention_mask=batch.mask, site="resid_mid",
              progress=False)
    with pytest.raises(ReasonlensError, match="parallel"):
        attribution_patch(neox.model(), batch.clean, batch.corrupted, attention_mask=batch.mask, site="resid_mid",
                          progress=False)
    for site in SITES:
        if site != "resid_mid":
            _compare(neox, site, compat=False, atol=1e-5)


def test_unknown_and_unwired_sites_are_errors(arch, monkeypatch):
    model, batch = arch.model(), arch.batch
    run = functools.partial(patch, model, batch.clean, batch.corrupted, attention_mask=batch.mask, progress=False)
    with pytest.raises(ReasonlensError, match="unknown patching site"):
        run(site="resid")
    if arch.name == "gpt2":
        monkeypatch.setitem(SITES, "resid_pre", "blocks.{l}.attn.qkv.hook_out")  # present, never fires
    else:
        monkeypatch.setitem(SITES, "resid_pre", "blocks.{l}.attn.hook_hidden_states")
    with pytest.raises(ReasonlensError, match="never fire"):
        run(site="resid_pre")
    monkeypatch.setitem(SITES, "resid_pre", "blocks.{l}.hook_nowhere")
    with pytest.raises(ReasonlensError, match="no hook point"):
        run(site="resid_pre")
