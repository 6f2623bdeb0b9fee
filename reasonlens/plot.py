"""Plot functions. Each returns a ``plotly.graph_objects.Figure`` and never calls ``.show()``, except
:func:`attention_view` (circuitsvis HTML) and :func:`chain_importance` (an HTML fragment)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from jaxtyping import Float, Int
from torch import Tensor

from reasonlens.errors import ReasonlensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from reasonlens.attribution.ipg import Attribution
    from reasonlens.patching.circuit import CircuitResult
    from reasonlens.patching.flow import FlowResult
    from reasonlens.patching.lens import PriorContextResult
    from reasonlens.patching.relations import RelationProbeResult


def accuracy_by_hops(metrics: dict[str, Any], key: str = "label_accuracy"):
    """Lines of accuracy against hops, one per ontology kind, from ``EvalResult.metrics()``.

    >>> fig = accuracy_by_hops({"label_accuracy": {"fictional": {"1": 1.0, "2": 0.9}}})
    >>> [t.name for t in fig.data]
    ['fictional']
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind, cells in metrics[key].items():
        xs = [h for h in cells if h.isdigit()]
        fig.add_trace(go.Scatter(x=[int(h) for h in xs], y=[cells[h] for h in xs], mode="lines+markers", name=kind))
    fig.update_layout(title=key.replace("_", " "), xaxis_title="hops", yaxis_title="accuracy",
                      yaxis_range=[0, 1.02], xaxis_dtick=1, template="plotly_white", height=380)
    return fig


def _as_grid(scores) -> tuple[Any, list[str], list[str]]:
    """A 2-D array with its row and column labels from a LabelledTensor (mean over examples) or a tensor."""
    from reasonlens.results import LabelledTensor

    if isinstance(scores, LabelledTensor):
        grid = scores.mean()
        axes = [a for a in scores.cell_axes if grid.shape[scores.cell_axes.index(a)] > 1 or len(scores.cell_axes) == 2]
        grid = grid.reshape([grid.shape[scores.cell_axes.index(a)] for a in axes])
        if grid.ndim != 2:
            raise ValueError(f"a heatmap needs two cell axes with more than one entry; got {scores.cell_axes}")
        return grid.detach().cpu().numpy(), scores.axis_labels(axes[0]), scores.axis_labels(axes[1])
    grid = scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores
    return grid, [f"L{i}" for i in range(grid.shape[0])], [str(j) for j in range(grid.shape[1])]


def colour_limit(values, max_clipped: float = 0.1, gap: float = 3.0) -> float:
    """A robust colour limit for a diverging heatmap of ``values``: the largest ``|value|``, unless a few cells
    (at most ``max_clipped`` of them, at least one) stand more than ``gap`` times above the next: then the largest
    value below that gap, and those cells are clipped. 1.0 for all-zero values.

    >>> colour_limit([60.0, -58.0, 1.0, -0.9, 0.5, 0.2, 0.1, 0.0, 0.3, 0.4, -0.2, 0.6, 0.7, 0.8, -0.3, 0.1])
    1.0
    >>> colour_limit([1.0, -0.9, 0.5])
    1.0
    """
    import numpy as np

    a = np.sort(np.abs(np.asarray(values, dtype=float)).ravel())[::-1]
    if a.size == 0 or a[0] == 0:
        return 1.0
    k = max(1, int(np.ceil(max_clipped * a.size)))
    best, limit = gap, float(a[0])
    for j in range(min(k, a.size - 1)):
        if a[j + 1] > 0 and a[j] / a[j + 1] > best:
            best, limit = a[j] / a[j + 1], float(a[j + 1])
    return limit


def head_heatmap(scores, *, title: str = "patching score", zmax: float | None = None):
    """Layer x head heatmap, diverging and centred at zero, hover labels ``L{l}H{h}`` (``L{l}KV{u}`` for the
    key / value heads of a grouped-query ``k`` or ``v`` sweep) with each cell's value. ``scores`` is a
    ``[layer, head]`` tensor or LabelledTensor, or a dict ``{facet title: scores}`` for one facet per subtask.

    Each facet has its own colour limit, stated in its title: ``zmax``, or a robust one (:func:`colour_limit`) so
    that a few outlying cells do not wash out the rest; cells beyond it take the end colour and are marked ``◆``.
    Colours show score / limit, so facets of different scales are all readable.

    >>> import torch
    >>> fig = head_heatmap({"s0": torch.zeros(2, 3), "s1": torch.ones(2, 3)})
    >>> len(fig.data), fig.layout.annotations[1].text
    (2, 's1 (±1)')
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = scores if isinstance(scores, dict) else {title: scores}
    grids = {name: _as_grid(s) for name, s in panels.items()}
    limits = {name: float(zmax) if zmax else colour_limit(g) for name, (g, _, _) in grids.items()}
    cols = min(len(grids), 4)
    rows = (len(grids) + cols - 1) // cols
    # Long facet titles such as "s0: decision (premise_copy subject)" break before the parenthesis, so that
    # neighbours do not overlap at four facets per row.
    titles = [f"{name.replace(' (', '<br>(')} (±{limits[name]:.3g})" for name in grids]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.2)
    fig.update_annotations(font_size=12)
    for i, (name, (grid, layer_labels, head_labels)) in enumerate(grids.items()):
        grid = np.asarray(grid, dtype=float)
        heads = [h if h.startswith(("H", "KV")) else f"H{h}" for h in head_labels]
        cells = [[f"{l}{h}" for h in heads] for l in layer_labels]
        clipped = np.abs(grid) > limits[name] * (1 + 1e-9)
        fig.add_trace(go.Heatmap(z=np.clip(grid / limits[name], -1, 1), x=heads, y=layer_labels,
                                 customdata=np.dstack([np.asarray(cells, dtype=object), grid]),
                                 text=np.where(clipped, "◆", ""), texttemplate="%{text}",
                                 zmid=0, zmin=-1, zmax=1, colorscale="RdBu", showscale=i == 0,
                                 colorbar=dict(title="score / limit"),
                                 hovertemplate="%{customdata[0]}: %{customdata[1]:.3f}<extra>" + name + "</extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, template="plotly_white", height=280 * rows + 100, width=None)
    return fig


def position_heatmap(scores, *, tokens: list[str] | None = None, title: str = "patching score"):
    """Layer x position (or span) heatmap of a sweep such as ``resid_pre`` by position, diverging and centred
    at zero; ``tokens`` label the positions.

    >>> import torch
    >>> position_heatmap(torch.zeros(2, 3), tokens=["a", "b", "c"]).data[0].x
    ('0 a', '1 b', '2 c')
    """
    import plotly.graph_objects as go

    grid, layer_labels, pos_labels = _as_grid(scores)
    if tokens is not None:
        if len(tokens) != grid.shape[1]:
            raise ValueError(f"{len(tokens)} tokens for {grid.shape[1]} positions")
        pos_labels = [f"{i} {t}" for i, t in enumerate(tokens)]
    bound = float(abs(grid).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=grid, x=pos_labels, y=layer_labels, zmid=0, zmin=-bound, zmax=bound,
                               colorscale="RdBu",
                               hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, template="plotly_white", height=120 + 40 * grid.shape[0],
                      xaxis_tickangle=-60)
    return fig


def _layer_axis(fig, labels: list[str], **where: int) -> None:
    """Numeric x positions ``0..n-1`` ticked with ``labels`` (so shapes can sit at a layer index)."""
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, title_text="layer",
                     **where)


def circuit_curves(circuits: dict[str, CircuitResult]):
    """Argmax agreement against circuit size, one line per subtask (error bars: standard error over prompts),
    the 0.9 target dashed, and a diamond at each subtask's band-around-the-mode selection.

    >>> import torch
    >>> from reasonlens.patching.circuit import BandSelection, CircuitResult
    >>> from reasonlens.results import LabelledTensor
    >>> matches = LabelledTensor(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), axes=("example", "size"))
    >>> band = BandSelection(half_width=0, keep=torch.ones(1, 2, dtype=torch.bool), agreements=[1.0])
    >>> fig = circuit_curves({"s0": CircuitResult([0, 2], matches, ["L0H0", "L0H1"], 1, 2, band)})
    >>> [(t.name, list(t.x)) for t in fig.data]
    [('s0', [0, 2]), ('s0 band', [2])]
    """
    import plotly.colors
    import plotly.graph_objects as go

    from reasonlens.patching.circuit import TARGET_AGREEMENT

    if not isinstance(circuits, dict) or not circuits:
        raise ReasonlensError("circuits must be a non-empty dict {subtask name: CircuitResult}, e.g. "
                              "{name: circuit_curve(...)} for each subtask")
    palette = plotly.colors.qualitative.Plotly
    fig = go.Figure()
    for i, (name, result) in enumerate(circuits.items()):
        colour = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=list(result.sizes), y=result.agreements, mode="lines+markers", name=name,
                                 legendgroup=name, line_color=colour,
                                 error_y=dict(type="data", array=result.matches.stderr().tolist(), thickness=1),
                                 hovertemplate="%{x} heads: %{y:.3f}<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(x=[result.band.size], y=[result.band.agreement], mode="markers",
                                 name=f"{name} band", legendgroup=name, showlegend=False,
                                 marker=dict(symbol="diamond", size=12, color=colour, line=dict(width=1, color="black")),
                                 hovertemplate=(f"band half-width {result.band.half_width}: " + "%{x} heads, "
                                                "agreement %{y:.3f}<extra>" + name + "</extra>")))
    fig.add_hline(y=TARGET_AGREEMENT, line_dash="dash", line_color="grey")
    # The legend goes below the plot, in rows, with room for every subtask: a side legend of eleven long subtask
    # names turns into a scroll box.
    rows = -(-len(circuits) // 3)
    fig.update_layout(title="circuit agreement with the full model", xaxis_title="heads kept",
                      yaxis_title="argmax agreement", yaxis_range=[0, 1.02], template="plotly_white",
                      height=420 + 24 * rows, legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
                      margin=dict(b=80 + 24 * rows))
    return fig


def prior_context_curves(prior: PriorContextResult):
    """Two panels per layer: the fraction of conflict items whose in-context token beats the prior token (0.5
    dashed, the crossover layer as a dotted vertical line), and the mean log-odds ``log p(context) - log
    p(prior)`` with standard-error bars.

    >>> import torch
    >>> from reasonlens.patching.lens import PriorContextResult
    >>> from reasonlens.results import LabelledTensor
    >>> lp = torch.tensor([[[-2.0, -1.0], [-1.0, -2.0]]] * 3)  # [example, token, layer]
    >>> prior = PriorContextResult(LabelledTensor(lp, axes=("example", "token", "layer"),
    ...                                           meta={"site": "resid_post"}))
    >>> [list(t.y) for t in prior_context_curves(prior).data]
    [[0.0, 1.0], [-1.0, 1.0]]
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if prior.n_items == 0:
        raise ReasonlensError("prior has no conflict items; run prior_vs_context on examples that yield some")
    labels = prior.layer_labels
    x = list(range(len(labels)))
    odds = prior.log_odds()
    fig = make_subplots(rows=1, cols=2, subplot_titles=["context token wins", "log p(context) - log p(prior)"],
                        horizontal_spacing=0.1)
    fig.add_trace(go.Scatter(x=x, y=prior.context_win_fraction().tolist(), mode="lines+markers",
                             name="context win fraction", text=labels,
                             hovertemplate="%{text}: %{y:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=odds.mean().tolist(), mode="lines+markers", name="mean log-odds", text=labels,
                             error_y=dict(type="data", array=odds.stderr().tolist(), thickness=1),
                             hovertemplate="%{text}: %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=1, col=1)
    fig.add_hline(y=0, line_dash="dash", line_color="grey", row=1, col=2)
    if prior.crossover_layer is not None:
        for col in (1, 2):
            fig.add_vline(x=prior.crossover_layer, line_dash="dot", line_color="firebrick", row=1, col=col)
    _layer_axis(fig, labels)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction of items", row=1, col=1)
    fig.update_yaxes(title_text="log-odds", row=1, col=2)
    crossover = "none" if prior.crossover_layer is None else labels[prior.crossover_layer]
    fig.update_layout(title=f"prior vs context ({prior.n_items} items, crossover: {crossover})",
                      template="plotly_white", height=380, showlegend=False)
    return fig


def relation_probe_curves(result: RelationProbeResult, metric: str = "accuracy"):
    """Probe ``metric`` per layer, one line per probe kind (error bars: standard deviation over seeds), with
    the chance level dashed.

    >>> import torch
    >>> from reasonlens.patching.relations import RelationProbeResult
    >>> from reasonlens.results import LabelledTensor
    >>> scores = LabelledTensor(torch.full((1, 2, 2, 3), 0.5), axes=("metric", "seed", "probe", "layer"),
    ...                         labels={"metric": ["accuracy"], "probe": ["linear", "mlp"]}, meta={"chance": 1 / 3})
    >>> [t.name for t in relation_probe_curves(RelationProbeResult(scores)).data]
    ['linear', 'mlp']
    """
    import plotly.graph_objects as go

    mean, std = result.mean(metric), result.std(metric)
    labels = result.layer_labels
    x = list(range(len(labels)))
    fig = go.Figure()
    for p, probe in enumerate(result.probes):
        fig.add_trace(go.Scatter(x=x, y=mean[p].tolist(), mode="lines+markers", name=probe, text=labels,
                                 error_y=dict(type="data", array=std[p].tolist(), thickness=1),
                                 hovertemplate="%{text}: %{y:.3f}<extra>" + probe + "</extra>"))
    fig.add_hline(y=result.chance, line_dash="dash", line_color="grey", annotation_text="chance",
                  annotation_position="bottom right")
    _layer_axis(fig, labels)
    fig.update_layout(title=f"relation probes: {metric.replace('_', ' ')}", yaxis_title=metric.replace("_", " "),
                      yaxis_range=[0, 1.02], template="plotly_white", height=380)
    return fig


_HEAD_NODE = re.compile(r"L(\d+)H(\d+)@(\d+)")


def _node_place(label: str, top: int, right: int) -> tuple[int, int]:
    """(x, y) of a pathway node: a head at (position, layer), ``pos N`` at (N, -1), ``output`` at the top right."""
    if label == "output":
        return right, top
    if label.startswith("pos "):
        return int(label[4:]), -1
    found = _HEAD_NODE.fullmatch(label)
    if found is None:
        raise ReasonlensError(f"unknown pathway node {label!r}; expected 'L<layer>H<head>@<pos>', 'pos <n>' or "
                              "'output' as FlowResult.edges gives")
    return int(found[3]), int(found[1])


def pathway_graph(flow: FlowResult, example: int = 0, tokens: list[str] | None = None):
    """One example's pathway tree: heads at (position, layer), source positions in a row below layer 0
    coloured by region, the output at the top right, arrows along the flow of information. ``tokens`` (the
    padded prompt's token strings) label the position axis at the positions the tree uses, the source nodes and
    the hover text. Heads that share a place are spread sideways; labels go above or below their nodes where there
    is room, and a label with room on neither side is left to the hover text (the title counts them), so that no
    two labels sit on each other.

    >>> from reasonlens.patching.flow import FlowNode, FlowResult
    >>> root = FlowNode(layer=1, head=0, pos=3, token=7, prob=0.5, depth=0, sources=[(1, 0.9)])
    >>> fig = pathway_graph(FlowResult([[root]], [7], [{"question": (0, 2)}], {"n_layers": 2}))
    >>> [(t.name, list(t.x), list(t.y)) for t in fig.data]
    [('heads', [3], [1]), ('question', [1], [-1]), ('output', [4], [2])]
    """
    import plotly.colors
    import plotly.graph_objects as go

    from reasonlens.patching.flow import OTHER, source_region

    edges = flow.edges(example)
    labels = list(dict.fromkeys([label for edge in edges for label in edge] + ["output"]))
    head_places = [_node_place(label, 0, 0) for label in labels if label != "output"]
    top = max([int(flow.meta.get("n_layers", 0))] + [y + 1 for _, y in head_places])
    right = max([x + 1 for x, _ in head_places], default=0)
    places = {label: _node_place(label, top, right) for label in labels}
    shared: dict[tuple[int, int], list[str]] = {}
    for label in labels:
        shared.setdefault(places[label], []).append(label)
    drawn = {label: (x + 0.35 * (i - (len(group) - 1) / 2) if len(group) > 1 else x, y)
             for (x, y), group in shared.items() for i, label in enumerate(group)}
    if tokens is not None and right > len(tokens):
        raise ReasonlensError(f"the tree reaches position {right - 1} but {len(tokens)} tokens were given; pass the "
                              "token strings of the whole padded prompt")

    def hover(label: str) -> str:
        x, _ = places[label]
        return label if tokens is None or label == "output" else f"{label}: {tokens[x]!r}"

    def text(label: str) -> str:
        if label.startswith("pos "):
            x = places[label][0]
            return str(x) if tokens is None else tokens[x].strip() or repr(tokens[x])
        return label.split("@")[0]

    # Row by row from the left, each label goes above or below its node, on the side with more room, where it clears
    # the side's previous label (7 px a character on a plot about 900 px wide); a label that fits on neither side is
    # left to the hover text, so no two labels sit on each other.
    character = 7 / (900 / (right + 1.3))
    side: dict[str, str | None] = {"output": "top center"}
    rows: dict[int, list[str]] = {}
    for label in labels:
        if label != "output":
            rows.setdefault(drawn[label][1], []).append(label)
    for row in rows.values():
        ends = {"top center": -float("inf"), "bottom center": -float("inf")}
        for label in sorted(row, key=lambda m: drawn[m][0]):
            x, half = drawn[label][0], len(text(label)) * character / 2
            room = [s for s, end in ends.items() if x - half > end + character]
            side[label] = min(room, key=ends.__getitem__) if room else None
            if side[label] is not None:
                ends[side[label]] = x + half
    hidden = sum(place is None for place in side.values())

    region_names = list(dict.fromkeys([*flow.regions[example], OTHER]))
    groups: dict[str, list[str]] = {"heads": [], **{name: [] for name in region_names}}
    for label in labels:
        if label.startswith("pos "):
            groups[source_region(places[label][0], flow.regions[example])].append(label)
        elif label != "output":
            groups["heads"].append(label)
    groups["output"] = ["output"]
    palette = plotly.colors.qualitative.Set2
    fig = go.Figure()
    for group, members in groups.items():
        if not members:
            continue
        if group == "heads":
            marker = dict(size=14, color="#636efa", symbol="circle")
        elif group == "output":
            marker = dict(size=16, color="black", symbol="star")
        else:
            colour = "lightgrey" if group == OTHER else palette[region_names.index(group) % len(palette)]
            marker = dict(size=13, color=colour, symbol="square")
        fig.add_trace(go.Scatter(x=[drawn[m][0] for m in members], y=[drawn[m][1] for m in members],
                                 mode="markers+text", name=group,
                                 text=[text(m) if side[m] else "" for m in members],
                                 textposition=[side[m] or "top center" for m in members],
                                 hovertext=[hover(m) for m in members], hoverinfo="text", marker=marker))
    for source, target in edges:
        (x0, y0), (x1, y1) = drawn[source], drawn[target]
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=2, arrowsize=1, arrowwidth=1, arrowcolor="grey", standoff=8, startstandoff=8,
                           text="")
    fig.update_yaxes(tickmode="array", tickvals=[-1, *range(top)], ticktext=["source", *(f"L{l}" for l in range(top))],
                     title_text="layer", range=[-1.6, top + 0.9])
    used = sorted({x for label, (x, _) in places.items() if label != "output"})
    if tokens is None:
        fig.update_xaxes(title_text="position", range=[-0.5, right + 0.8])
    else:
        fig.update_xaxes(title_text="token (position)", range=[-0.5, right + 0.8], tickmode="array", tickvals=used,
                         ticktext=[f"{tokens[x].strip() or repr(tokens[x])} ({x})" for x in used], tickangle=-45)
    fig.update_layout(title=f"pathways of example {example} ({len(edges)} edges"
                            + (f"; {hidden} labels without room are in the hover text)" if hidden else ")"),
                      template="plotly_white",
                      height=160 + 75 * top)  # rows far enough apart that labels below one clear those above the next
    return fig


def component_heatmap(scores: Attribution, *, top_k: int | None = None, title: str = "attribution score"):
    """Layer x unit heatmap of an attribution's mean score, diverging at zero, hover labels ``L3R17``; with
    ``top_k``, only the ``top_k`` units with the largest absolute score in any layer (in unit order).

    >>> import torch
    >>> from reasonlens.attribution.ipg import Attribution
    >>> a = Attribution(torch.randn(2, 3, 10), axes=("example", "layer", "unit"),
    ...                 labels={"layer": ["L0", "L1", "L2"], "unit": [f"N{i}" for i in range(10)]}, meta={"component": "neuron"})
    >>> component_heatmap(a, top_k=4).data[0].z.shape
    (3, 4)
    """
    import plotly.graph_objects as go

    grid = scores.mean()
    units = scores.axis_labels("unit")
    layers = scores.axis_labels("layer")
    keep = list(range(len(units)))
    if top_k is not None and top_k < len(units):
        keep = sorted(grid.abs().amax(0).topk(top_k).indices.tolist())
    z = grid[:, keep].numpy()
    bound = float(abs(z).max()) or 1.0
    text = [[f"{l}{units[u]}" for u in keep] for l in layers]
    fig = go.Figure(go.Heatmap(z=z, x=[units[u] for u in keep], y=layers, text=text, zmid=0, zmin=-bound,
                               zmax=bound, colorscale="RdBu", colorbar_title="score (+ blue)",
                               hovertemplate="%{text}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title + (f" (top {top_k} units)" if top_k is not None else ""), xaxis_title="unit",
                      yaxis_title="layer", template="plotly_white", height=220 + 28 * len(layers))
    fig.update_xaxes(type="category")
    return fig


def accuracy_vs_p(curves: dict[str, dict[int, float]], original: float | None = None, *,
                  intervals: dict[str, dict[int, list[float]]] | None = None,
                  title: str = "accuracy after intervention"):
    """Accuracy against the number of components ``p``, one line per method (``{method: {p: accuracy}}``), with
    error bars from ``intervals`` (``{method: {p: [low, high]}}``) where given, the unmodified model's accuracy
    dashed.

    >>> fig = accuracy_vs_p({"ipg": {4: 0.2, 8: 0.1}, "random": {4: 0.7, 8: 0.7}}, 0.72)
    >>> [t.name for t in fig.data]
    ['ipg', 'random']
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for method, row in curves.items():
        ps = sorted(row, key=int)
        bars = None
        if intervals is not None and method in intervals:
            low_high = [intervals[method][p] for p in ps]
            bars = dict(type="data", symmetric=False, array=[h - row[p] for p, (_, h) in zip(ps, low_high)],
                        arrayminus=[row[p] - lo for p, (lo, _) in zip(ps, low_high)])
        fig.add_trace(go.Scatter(x=[int(p) for p in ps], y=[row[p] for p in ps], mode="lines+markers", name=method,
                                 error_y=bars))
    if original is not None:
        fig.add_hline(y=original, line_dash="dash", line_color="gray", annotation_text="unmodified")
    ticks = sorted({int(p) for row in curves.values() for p in row})
    fig.update_layout(title=title, xaxis_title="components p", yaxis_title="accuracy", yaxis_range=[0, 1.02],
                      xaxis=dict(type="log", tickvals=ticks, ticktext=[str(p) for p in ticks]),
                      template="plotly_white", height=380)
    return fig


def gamma_sweep(sweep: dict[float, dict[str, float]], *, title: str = "scaling the selected components"):
    """Accuracy (left axis) and mean CoT steps (right axis) against ``gamma`` from ``{gamma: {"accuracy",
    "mean_steps"}}``.

    >>> fig = gamma_sweep({0.0: {"accuracy": 0.5, "mean_steps": 4.0}, 1.0: {"accuracy": 0.7, "mean_steps": 6.0}})
    >>> [t.name for t in fig.data]
    ['accuracy', 'mean steps']
    """
    import plotly.graph_objects as go

    gammas = sorted(sweep, key=float)
    fig = go.Figure([go.Scatter(x=[float(g) for g in gammas], y=[sweep[g]["accuracy"] for g in gammas],
                                mode="lines+markers", name="accuracy"),
                     go.Scatter(x=[float(g) for g in gammas], y=[sweep[g]["mean_steps"] for g in gammas],
                                mode="lines+markers", name="mean steps", yaxis="y2")])
    fig.update_layout(title=title, xaxis_title="gamma", yaxis=dict(title="accuracy", range=[0, 1.02]),
                      yaxis2=dict(title="mean CoT steps", overlaying="y", side="right"), template="plotly_white",
                      height=380)
    return fig


def _pairwise_heatmap(table: dict[str, Any], title: str):
    import plotly.graph_objects as go

    names, matrix = table["names"], table["matrix"]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               text=[["" if v is None else f"{v:.2f}" for v in row] for row in matrix],
                               texttemplate="%{text}"))
    fig.update_layout(title=title, template="plotly_white", height=260 + 40 * len(names), width=300 + 60 * len(names))
    return fig


def dice_matrix(table: dict[str, Any], *, title: str = "Dice overlap"):
    """Symmetric heatmap of Dice overlaps between selections from ``{"names": [...], "matrix": [[...]]}`` (as in
    ``IPGStudyResult.dice["variants"]``), values printed in the cells; a missing value (None) stays blank.

    >>> dice_matrix({"names": ["a", "b"], "matrix": [[1.0, 0.5], [0.5, 1.0]]}).data[0].z
    ([1.0, 0.5], [0.5, 1.0])
    """
    return _pairwise_heatmap(table, title)


def agreement_matrix(table: dict[str, Any], *, title: str = "probe agreement"):
    """Heatmap of the fraction of steps two probes label alike, from ``{"names": [...], "matrix": [[...]]}`` (as in
    ``StepImportanceResult.cross_model["matrix"]``: rows and columns are models).

    >>> agreement_matrix({"names": ["main", "seed1"], "matrix": [[1.0, 0.9], [0.9, 1.0]]}).data[0].x
    ('main', 'seed1')
    """
    return _pairwise_heatmap(table, title)


def probe_accuracy_by_layer(per_layer: dict[str, list[float]], bands: dict[str, float] | None = None, *,
                            title: str = "probe accuracy by layer"):
    """Probe accuracy against the layer it reads, one line per series (``{"context": [...], ...}``), with
    each baseline of ``bands`` (``{"tf-idf": 0.7, ...}``) as a dashed horizontal line; chance is dotted.

    >>> fig = probe_accuracy_by_layer({"context": [0.6, 0.8]}, {"tf-idf": 0.7})
    >>> [t.name for t in fig.data]
    ['context', 'tf-idf']
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in per_layer.items():
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=list(values), mode="lines+markers", name=name))
    n_layers = max((len(v) for v in per_layer.values()), default=1)
    for name, value in (bands or {}).items():
        fig.add_trace(go.Scatter(x=[-0.3, n_layers - 0.7], y=[value, value], mode="lines", name=name,
                                 line={"dash": "dash"}))
    fig.add_hline(y=0.5, line={"dash": "dot", "color": "#999"})
    fig.update_layout(title=title, xaxis_title="layer (residual stream after the block)", yaxis_title="accuracy",
                      yaxis_range=[0.3, 1.02], xaxis_dtick=1, template="plotly_white", height=400)
    return fig


def influence_heatmap(influence: Float[Tensor, "step step"], steps: list[str] | None = None, *,
                      title: str = "influence of step j (column) on step k (row)"):
    """The step-to-step influence matrix ``I[k, j]`` as a heatmap, steps in chain order (zero above the
    diagonal by causality); hover shows both steps' text.

    >>> import torch
    >>> influence_heatmap(torch.tensor([[0.0, 0.0], [0.4, 0.0]]), ["a.", "b."]).data[0].z.shape
    (2, 2)
    """
    import plotly.graph_objects as go

    grid = influence.detach().cpu().float().numpy()
    n = grid.shape[0]
    if grid.ndim != 2 or grid.shape[1] != n:
        raise ReasonlensError(f"influence must be a square [step, step] matrix, got shape {tuple(grid.shape)}")
    steps = steps if steps is not None else [f"step {i}" for i in range(n)]
    if len(steps) != n:
        raise ReasonlensError(f"{len(steps)} step texts for a {n}-step matrix")
    ticks = [f"{i}" for i in range(n)]
    hover = [[f"k={k}: {steps[k]}<br>j={j}: {steps[j]}" for j in range(n)] for k in range(n)]
    fig = go.Figure(go.Heatmap(z=grid, x=ticks, y=ticks, colorscale="Viridis", text=hover,
                               hovertemplate="%{text}<br>I=%{z:.3g}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="source step j", yaxis_title="target step k", yaxis_autorange="reversed",
                      template="plotly_white", height=300 + 18 * n, width=340 + 18 * n)
    return fig


def chain_importance(steps: list[str], removable: list[float | None], labels: list[int | None] | None = None, *,
                     legend: bool = True) -> str:
    """A chain as HTML, each step shaded by its predicted probability of being removable (``removable``, 0..1;
    ``None`` for a step without a prediction, left grey): green for removable, red for important; with
    ``labels`` (1 removable, 0 important, None unlabelled) each labelled step is also underlined by its label.
    Returns an HTML fragment (like :func:`attention_view`), for a page or ``IPython.display.HTML``; ``legend``
    adds a line that explains the colours.

    >>> "removable" in chain_importance(["Rex is a cat.", "Rex is red."], [0.9, None], [1, None])
    True
    """
    import html

    if len(steps) != len(removable) or (labels is not None and len(labels) != len(steps)):
        raise ReasonlensError(f"{len(steps)} steps but {len(removable)} scores"
                              + (f" and {len(labels)} labels" if labels is not None else ""))
    parts = []
    for i, (step, p) in enumerate(zip(steps, removable)):
        label = None if labels is None else labels[i]
        if p is None:
            colour, shown = "#e8e8e8", "no prediction"
        else:
            p = min(max(float(p), 0.0), 1.0)
            colour = f"rgb({int(255 - 90 * p)},{int(165 + 90 * p)},{int(170 - 40 * abs(p - 0.5))})"
            shown = f"P(removable) = {p:.2f}"
        line = {1: "border-bottom:3px solid #1a7f37", 0: "border-bottom:3px solid #c62828"}.get(label, "")
        name = {1: "removable", 0: "important", None: "unlabelled"}[label]
        parts.append(f"<span title='step {i}: {shown}; label: {name}' style='background:{colour};"
                     f"padding:1px 3px;margin:1px;border-radius:3px;{line}'>{html.escape(step)}</span>")
    key = ("<div style='font-size:.85em;color:#555'>shade: predicted P(removable) (green removable, red important, "
           "grey no prediction); underline: the label (green removable, red important, none unlabelled)</div>")
    return "<div style='line-height:2'>" + " ".join(parts) + "</div>" + (key if legend else "")


_HEAD = re.compile(r"L(\d+)H(\d+)")


def attention_view(model: TransformerBridge, tokens: Int[Tensor, " pos"] | list[int], heads: list[str], *,
                   attention_mask: Int[Tensor, " pos"] | None = None) -> str:
    """Interactive attention patterns ``[head, dest, src]`` of ``heads`` (``"L{l}H{h}"`` labels) on one prompt, as
    a self-contained circuitsvis HTML fragment (its JavaScript inlined, so it works offline; about 1.3 MB).

    Returns a string rather than a Figure: circuitsvis draws with its own React code, not plotly. Display it
    with ``IPython.display.HTML(...)`` or write it into a page. With ``attention_mask`` (a left-padded row)
    the padding is dropped first; the prompt then runs as it does in a padded batch.

    >>> from reasonlens.model import load_model
    >>> model = load_model("reasonlens-main")
    >>> html = attention_view(model, model.to_tokens("Every wumpus is wooden.")[0], ["L1H0", "L0H1"])
    >>> "L1H0" in html and "wumpus" in html and "unpkg.com" not in html
    True
    """
    import circuitsvis as cv
    import torch

    from reasonlens.model import require_tokenizer

    ids = torch.as_tensor(tokens, dtype=torch.long)
    if ids.ndim != 1 or ids.numel() == 0:
        raise ReasonlensError(f"tokens must be one non-empty prompt [pos], got shape {tuple(ids.shape)}; pass a "
                              "single row, not a batch")
    if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab:
        raise ReasonlensError(f"tokens hold ids outside the vocabulary [0, {model.cfg.d_vocab}); encode the prompt "
                              "with this model's tokenizer")
    if attention_mask is not None:
        mask = attention_mask.long().cpu()
        if mask.shape != ids.shape or bool(((mask != 0) & (mask != 1)).any()) or not bool(mask[-1]) \
                or bool((mask[1:] < mask[:-1]).any()):
            raise ReasonlensError(f"attention_mask must be a left-padded 0/1 row of the tokens' shape "
                                  f"{tuple(ids.shape)} (zeros, then ones up to the last position)")
        ids = ids[mask.bool()]
    if not heads:
        raise ReasonlensError("heads is empty; name at least one head, e.g. ['L0H1']")
    picked = []
    for head in heads:
        found = _HEAD.fullmatch(head)
        if found is None or int(found[1]) >= model.cfg.n_layers or int(found[2]) >= model.cfg.n_heads:
            raise ReasonlensError(f"unknown head {head!r}; name heads 'L<layer>H<head>' with layer < "
                                  f"{model.cfg.n_layers} and head < {model.cfg.n_heads}")
        picked.append((int(found[1]), int(found[2])))
    names = {f"blocks.{layer}.attn.hook_pattern" for layer, _ in picked}
    with torch.no_grad():
        _, cache = model.run_with_cache(ids[None].to(model.cfg.device), names_filter=lambda name: name in names)
    patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0, head] for layer, head in picked])
    str_tokens = require_tokenizer(model).convert_ids_to_tokens(ids.tolist())
    html = cv.attention.attention_heads(attention=patterns.float().cpu(), tokens=str_tokens,
                                        attention_head_names=list(heads)).local_src
    # circuitsvis writes its mount point as <div .../>, which HTML reads as an open <div>: everything after the view
    # would sit inside it and vanish when React renders into it. Close it.
    return re.sub(r'(<div id="circuits-vis-[^"]*"[^>]*?)\s*/>', r"\1></div>", html, count=1)


if TYPE_CHECKING:
    from reasonlens.patching.horizon import HorizonResult


def horizon_heatmap(result: HorizonResult, *, title: str | None = None):
    """Stage x layer heatmap of the fraction of generations left intact when one layer's ``z`` (all heads, all
    prefix positions) comes from the corrupted prompt (:func:`reasonlens.patching.horizon.measure_horizon`): red
    broken, blue intact, each cell labelled with its fraction; hover adds the 95% Wilson interval and ``n``.
    Each stage's tick names its unpatched corrupted-prompt baseline.

    >>> import torch
    >>> from reasonlens.patching.horizon import HorizonResult
    >>> from reasonlens.results import LabelledTensor
    >>> ok = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]] * 4)  # [example, stage, layer]
    >>> result = HorizonResult(LabelledTensor(ok, axes=("example", "stage", "layer")), ok.bool(),
    ...                        torch.ones(4, 2, dtype=torch.bool), torch.zeros(4, 2, dtype=torch.bool), [0, 3],
    ...                        [0, 1], 2, 4, [0, 1, 2, 3], [0, 1, 2, 3], [], [("a.", "b.")] * 4)
    >>> fig = horizon_heatmap(result)
    >>> fig.data[0].x, fig.data[0].z.tolist()
    (('L0', 'L1'), [[0.0, 1.0], [1.0, 1.0]])
    """
    import plotly.graph_objects as go

    if result.n == 0:
        raise ReasonlensError("the horizon result keeps no example (all skipped or dropped); nothing to plot")
    grid = result.fraction.values.detach().cpu().numpy()
    ci = result.intervals().detach().cpu().numpy()
    corrupted = result.corrupted_baseline().tolist()
    stages = [f"{label} (corrupted {c:.2f})" for label, c in zip(result.stage_labels, corrupted)]
    custom = [[[lo, hi] for lo, hi in row] for row in ci]
    fig = go.Figure(go.Heatmap(z=grid, x=result.layer_labels, y=stages, zmin=0, zmax=1, colorscale="RdBu",
                               customdata=custom, texttemplate="%{z:.2f}", colorbar=dict(title="intact"),
                               hovertemplate="%{y} %{x}: %{z:.3f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                                             f"<extra>n={result.n}</extra>"))
    fig.update_yaxes(autorange="reversed", title_text="stage (gold CoT sentences written)")
    fig.update_xaxes(title_text="patched layer (all heads' z from the corrupted prompt)")
    statement = result.meta.get("statement", "statement")
    fig.update_layout(title=title or f"horizon: {statement} corrupted, fraction of chains intact (n={result.n})",
                      template="plotly_white", height=140 + 40 * grid.shape[0])
    return fig
