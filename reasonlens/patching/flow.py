"""Recursive information-flow tracer of Dutta et al. (TMLR 2024): the "parallel pathways" of answer generation.

Starting from the argmax token X at the last position, the tracer alternates three stages (as the authors'
``informationFlow.py``):

- **I** ``(pos, token, bound)``: rank the circuit's heads in layers ``< bound`` by the logit-lens probability
  of ``token`` in the head's output alone at ``pos`` (``softmax(W_U ln_final(z_h W_O) + b_U)``); keep the
  top ``l``. The roots are stage I at the last position for X with every layer allowed (depth 0: the answer
  writers).
- **II** ``(layer, head, pos)``: the positions the head attends to from ``pos`` with a probability above the
  median of the row (over real positions up to ``pos``); keep the top ``k``.
- **III** ``(layer, src)``: the logit lens of ``resid_pre[layer]`` at ``src``; keep the top ``p`` tokens above
  the vocabulary median. Each token is traced by stage I at ``src`` with bound ``layer``: the children, one
  depth deeper.

A node at depth ``d`` is expanded with ``k_d = max(1, k - d)``, ``p_d = max(1, p - d)`` and children chosen
with ``l_d = max(1, l - d)`` (the roots with ``l``), which is the authors' decrement: their loop lowers l, k, p
after expanding each depth. Layers strictly decrease along every chain, so tracing ends by layer 0. The
authors expand each (layer, head, pos) once per example; here a node reached along two chains is expanded in
both, so the result is a tree whose root-to-leaf chains are the pathways.

A **pathway** is a chain of heads from a root down to a source position that is traced no further: a stage-II
position of the chain's last head that yielded no children (no token above the median, no circuit head in a
lower layer, or ``max_depth`` reached). Its source is that position (the leaf-most source: where the chain
reads the information from the context), classified by the example's ``regions`` (``[start, end)`` token
positions in padded coordinates, e.g. ``"few_shot"``, ``"question"``, ``"cot"``); a position in no region, and
a head whose attention row has nothing above its median (source ``None``), count as ``"other"``. (The
authors classify the positions of depth-1 heads, i.e. the sources of the answer writers; ``max_depth=1``
gives pathways that end there.)

>>> source_region(7, {"question": (0, 5), "cot": (5, 9)})
'cot'
>>> source_region(None, {"question": (0, 5)})
'other'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError
from reasonlens.patching.circuit import HeadMeans, mean_ablation_hooks
from reasonlens.patching.heads import head_outputs
from reasonlens.results import LabelledTensor
from reasonlens.runtime import batch_slices, lens_logits, run_padded, saving_hooks
from reasonlens.validation import check_tokens, is_int, load_saved

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Regions = dict[str, tuple[int, int]]
OTHER = "other"


def source_region(position: int | None, regions: Regions) -> str:
    """The first region of ``regions`` (name -> ``[start, end)``) holding ``position``, else ``"other"``."""
    if position is not None:
        for name, (start, end) in regions.items():
            if start <= position < end:
                return name
    return OTHER


@dataclass
class FlowNode:
    """A head of a pathway tree: head ``head`` of ``layer`` writes ``token`` at ``pos`` with logit-lens
    probability ``prob``; ``sources`` are its stage-II positions ``(position, attention)``, best first;
    ``children`` the heads that bring the tokens at those positions there (their ``pos`` is the source)."""

    layer: int
    head: int
    pos: int
    token: int
    prob: float
    depth: int
    sources: list[tuple[int, float]] = field(default_factory=list)
    children: list[FlowNode] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}@{self.pos}"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head, "pos": self.pos, "token": self.token, "prob": self.prob,
                "depth": self.depth, "sources": [list(s) for s in self.sources],
                "children": [c.to_dict() for c in self.children]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowNode:
        return cls(layer=data["layer"], head=data["head"], pos=data["pos"], token=data["token"], prob=data["prob"],
                   depth=data["depth"], sources=[(int(p), float(a)) for p, a in data["sources"]],
                   children=[cls.from_dict(c) for c in data["children"]])


@dataclass(frozen=True)
class Pathway:
    """One root-to-source chain of example ``example``: ``heads`` as ``(layer, head, pos)`` from the answer
    writer down, ``source`` the position it reads from (None: attention with nothing above its median)."""

    example: int
    heads: tuple[tuple[int, int, int], ...]
    source: int | None
    region: str


def _node_pathways(node: FlowNode, chain: tuple[tuple[int, int, int], ...], example: int,
                   regions: Regions) -> list[Pathway]:
    chain = (*chain, (node.layer, node.head, node.pos))
    if not node.sources:
        return [Pathway(example, chain, None, OTHER)]
    found = []
    for position, _ in node.sources:
        children = [c for c in node.children if c.pos == position]
        if not children:
            found.append(Pathway(example, chain, position, source_region(position, regions)))
        for child in children:
            found.extend(_node_pathways(child, chain, example, regions))
    return found


def _walk(nodes: list[FlowNode]) -> list[FlowNode]:
    return [n for node in nodes for n in (node, *_walk(node.children))]


@dataclass
class FlowResult:
    """Pathway trees, one list of root nodes (the answer writers) per example; ``predicted[e]`` is the token
    traced (the argmax at the last position); ``meta`` holds the settings and model shape."""

    roots: list[list[FlowNode]]
    predicted: list[int]
    regions: list[Regions]
    meta: dict[str, Any] = field(default_factory=dict)

    def pathways(self) -> list[Pathway]:
        """The distinct pathways of every example, in tree order."""
        found: list[Pathway] = []
        for e, (roots, regions) in enumerate(zip(self.roots, self.regions)):
            paths = [p for root in roots for p in _node_pathways(root, (), e, regions)]
            found.extend(dict.fromkeys(paths))
        return found

    def region_names(self) -> list[str]:
        """The regions named in any example, in first-seen order, then ``"other"``."""
        names = dict.fromkeys(name for regions in self.regions for name in regions)
        names.pop(OTHER, None)
        return [*names, OTHER]

    def source_counts(self) -> LabelledTensor:
        """Distinct pathways per example and source region, ``[example, region]``."""
        names = self.region_names()
        counts = torch.zeros(len(self.roots), len(names))
        for p in self.pathways():
            counts[p.example, names.index(p.region)] += 1
        return LabelledTensor(counts, axes=("example", "region"), labels={"region": names},
                              meta={**self.meta, "metric": "distinct pathways"})

    def counts_by_source(self) -> dict[str, int]:
        """Distinct pathways per source region, summed over examples."""
        counts = self.source_counts()
        return {name: int(v) for name, v in zip(counts.labels["region"], counts.values.sum(0).tolist())}

    def head_counts(self, depth: int) -> LabelledTensor:
        """How often each head occurs at ``depth`` over all trees, ``[layer, head]`` (depth 0: the writers)."""
        n_layers, n_heads = self.meta["n_layers"], self.meta["n_heads"]
        counts = torch.zeros(n_layers, n_heads)
        for node in _walk([r for roots in self.roots for r in roots]):
            if node.depth == depth:
                counts[node.layer, node.head] += 1
        return LabelledTensor(counts, axes=("layer", "head"),
                              labels={"layer": [f"L{l}" for l in range(n_layers)],
                                      "head": [f"H{h}" for h in range(n_heads)]},
                              meta={**self.meta, "depth": depth})

    def edges(self, example: int) -> list[tuple[str, str]]:
        """``(source, target)`` edges of an example's tree along the flow of information: ``"pos 12"`` ->
        head, head (``"L2H1@12"``) -> the head that reads it, root -> ``"output"``."""
        if not 0 <= example < len(self.roots):
            raise ReasonlensError(f"example must be in 0..{len(self.roots) - 1}, got {example}")
        edges = [(root.label, "output") for root in self.roots[example]]
        for node in _walk(self.roots[example]):
            for position, _ in node.sources:
                children = [c for c in node.children if c.pos == position]
                edges.extend((c.label, node.label) for c in children)
                if not children:
                    edges.append((f"pos {position}", node.label))
        return list(dict.fromkeys(edges))

    def to_dict(self) -> dict[str, Any]:
        return {"roots": [[r.to_dict() for r in roots] for roots in self.roots], "predicted": self.predicted,
                "regions": [{k: list(v) for k, v in r.items()} for r in self.regions], "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowResult:
        return cls(roots=[[FlowNode.from_dict(r) for r in roots] for roots in data["roots"]],
                   predicted=list(data["predicted"]),
                   regions=[{k: (int(a), int(b)) for k, (a, b) in r.items()} for r in data["regions"]],
                   meta=data["meta"])

    def save(self, path: str | Path) -> Path:
        """Write ``path`` as JSON; :meth:`load` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FlowResult:
        """Read a file written by :meth:`save`."""
        return cls.from_dict(load_saved(path, cls.__name__, ("roots", "predicted", "regions", "meta"), fmt="json"))


class _Tracer:
    """Stages I-III on one example's cached activations."""

    def __init__(self, model: TransformerBridge, z: Tensor, pattern: Tensor, resid_pre: Tensor, real: list[bool],
                 circuit: Tensor, l: int, k: int, p: int, max_depth: int | None):
        self.model, self.z, self.pattern, self.resid_pre, self.real = model, z, pattern, resid_pre, real
        self.in_circuit = circuit.tolist()
        self.l, self.k, self.p, self.max_depth = l, k, p, max_depth
        self.n_layers, self.n_heads = circuit.shape

    def heads(self, pos: int, token: int, bound: int, depth: int, top: int) -> list[FlowNode]:
        """Stage I: the top circuit heads in layers < bound by the probability of token in their output."""
        if bound == 0:
            return []
        with torch.no_grad():
            outputs = head_outputs(self.model, self.z[:, pos])[:bound]
            probs = torch.softmax(lens_logits(self.model, outputs), -1)[..., token].tolist()
        ranked = sorted(((probs[layer][head], layer, head) for layer in range(bound) for head in range(self.n_heads)
                         if self.in_circuit[layer][head]), key=lambda t: -t[0])
        return [FlowNode(layer, head, pos, token, prob, depth) for prob, layer, head in ranked[:top]]

    def sources(self, node: FlowNode, top: int) -> list[tuple[int, float]]:
        """Stage II: attended positions above the row's median (over real positions up to the query)."""
        row = self.pattern[node.layer, node.head, node.pos]
        candidates = [j for j in range(node.pos + 1) if self.real[j]]
        values = row[candidates].double()
        median = float(torch.quantile(values, 0.5))
        above = [(j, float(v)) for j, v in zip(candidates, values.tolist()) if v > median]
        return sorted(above, key=lambda t: -t[1])[:top]

    def tokens(self, layer: int, pos: int, top: int) -> list[int]:
        """Stage III: the top tokens of the logit lens of resid_pre[layer] at pos, above the vocabulary median."""
        with torch.no_grad():
            probs = torch.softmax(lens_logits(self.model, self.resid_pre[layer, pos]), -1).double()
        median = float(torch.quantile(probs, 0.5))
        order = torch.sort(-probs, stable=True).indices[:top]
        return [int(t) for t in order.tolist() if float(probs[t]) > median]

    def expand(self, node: FlowNode) -> None:
        d = node.depth
        node.sources = self.sources(node, max(1, self.k - d))
        if self.max_depth is not None and d >= self.max_depth:
            return
        for position, _ in node.sources:
            for token in self.tokens(node.layer, position, max(1, self.p - d)):
                node.children.extend(self.heads(position, token, node.layer, d + 1, max(1, self.l - d)))
        for child in node.children:
            self.expand(child)

    def trace(self, token: int) -> list[FlowNode]:
        last = self.z.shape[1] - 1
        roots = self.heads(last, token, self.n_layers, 0, self.l)
        for root in roots:
            self.expand(root)
        return roots


def _check_regions(regions: object, n: int, width: int) -> None:
    if isinstance(regions, (str, bytes, dict)) or not hasattr(regions, "__len__"):
        raise ReasonlensError(f"regions must be a list with one dict of region -> (start, end) per prompt, got "
                              f"{type(regions).__name__}")
    if len(regions) != n:
        raise ReasonlensError(f"regions has {len(regions)} entries but the batch has {n} prompts; pass one "
                              "dict of region -> (start, end) per prompt")
    for i, r in enumerate(regions):
        if not isinstance(r, dict):
            raise ReasonlensError(f"regions entry {i} is {type(r).__name__}; pass a dict of region -> (start, end)")
        for name, bounds in r.items():
            ints = isinstance(bounds, (tuple, list)) and len(bounds) == 2 and all(is_int(b) for b in bounds)
            if not ints or not 0 <= bounds[0] <= bounds[1] <= width:
                raise ReasonlensError(f"region {name!r} of prompt {i} is {bounds}; give [start, end) token positions "
                                      f"of the padded batch, 0 <= start <= end <= {width}")


def trace_pathways(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                   regions: list[Regions], circuit: Bool[Tensor, "layer head"] | None = None, *,
                   means: HeadMeans | None = None, l: int = 4, k: int = 1, p: int = 1, max_depth: int | None = None,
                   batch_size: int = 8, progress: bool = False) -> FlowResult:
    """Trace the pathways that bring each prompt's predicted next token to its last position.

    ``circuit``: the heads stage I may choose (default: all). With ``means`` (from
    :func:`~reasonlens.patching.circuit.mean_head_activations`) the activations come from the circuit model,
    the other heads mean-ablated, as in the authors' code; without, from the full model. One forward pass per
    ``batch_size`` prompts caches every layer's ``z``, attention pattern and ``resid_pre``; the stages read
    that cache. ``max_depth``: deepest node depth (None: until layer 0).
    """
    from tqdm.auto import tqdm

    tokens, attention_mask = check_tokens(model, tokens, attention_mask)
    n, width = tokens.shape
    _check_regions(regions, n, width)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if circuit is None:
        circuit = torch.ones(n_layers, n_heads, dtype=torch.bool)
    if tuple(circuit.shape) != (n_layers, n_heads) or circuit.dtype != torch.bool:
        raise ReasonlensError(f"circuit must be a bool [layer, head] = {(n_layers, n_heads)} mask, got {circuit.dtype} "
                              f"of shape {tuple(circuit.shape)}")
    if (not all(is_int(v) and v >= 1 for v in (l, k, p))
            or not (max_depth is None or (is_int(max_depth) and max_depth >= 0))):
        raise ReasonlensError(f"l, k and p must be integers >= 1 and max_depth an integer >= 0 or None, got l={l!r}, "
                              f"k={k!r}, p={p!r}, max_depth={max_depth!r}")
    if means is not None:
        means.check(model)
    names = {kind: [f"blocks.{i}.{kind}" for i in range(n_layers)]
             for kind in ("attn.hook_z", "attn.hook_pattern", "hook_resid_pre")}
    selects = {name: (lambda a: a) for group in names.values() for name in group}
    roots: list[list[FlowNode]] = []
    predicted: list[int] = []
    with tqdm(total=n, desc="trace pathways", unit="prompt", disable=not progress) as bar:
        for rows in batch_slices(n, batch_size):
            store: dict[str, Tensor] = {}
            hooks = [] if means is None else mean_ablation_hooks(circuit.expand(rows.stop - rows.start, -1, -1),
                                                                 means, width, model.cfg.device)
            logits = run_padded(model, tokens[rows], attention_mask[rows], [*hooks, *saving_hooks(store, selects)])
            cached = {kind: torch.stack([store[name] for name in group], 1) for kind, group in names.items()}
            for i, row in enumerate(range(rows.start, rows.stop)):
                token = int(logits[i, -1].argmax())
                tracer = _Tracer(model, cached["attn.hook_z"][i], cached["attn.hook_pattern"][i],
                                 cached["hook_resid_pre"][i], attention_mask[row].bool().tolist(), circuit,
                                 l, k, p, max_depth)
                roots.append(tracer.trace(token))
                predicted.append(token)
                bar.update(1)
    meta = {"model": str(model.cfg.model_name), "n_layers": n_layers, "n_heads": n_heads, "l": l, "k": k, "p": p,
            "max_depth": max_depth, "circuit_size": int(circuit.sum()), "mean_ablated": means is not None}
    return FlowResult(roots=roots, predicted=predicted, regions=[dict(r) for r in regions], meta=meta)
