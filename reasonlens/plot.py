"""Plot functions. Each returns a ``plotly.graph_objects.Figure`` and never calls ``.show()``."""

from __future__ import annotations

from typing import Any


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


def head_heatmap(scores, *, title: str = "patching score", zmax: float | None = None):
    """Layer x head heatmap, diverging and centred at zero, hover labels ``L{l}H{h}``. ``scores`` is a
    ``[layer, head]`` tensor or LabelledTensor, or a dict ``{facet title: scores}`` for one facet per subtask.

    >>> import torch
    >>> fig = head_heatmap({"s0": torch.zeros(2, 3), "s1": torch.ones(2, 3)})
    >>> len(fig.data)
    2
    """
    from plotly.subplots import make_subplots

    panels = scores if isinstance(scores, dict) else {title: scores}
    grids = {name: _as_grid(s) for name, s in panels.items()}
    bound = zmax or max(float(abs(g).max()) for g, _, _ in grids.values()) or 1.0
    cols = min(len(grids), 5)
    rows = (len(grids) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(grids), horizontal_spacing=0.04,
                        vertical_spacing=0.12)
    import plotly.graph_objects as go

    for i, (name, (grid, layer_labels, head_labels)) in enumerate(grids.items()):
        heads = [h if h.startswith("H") else f"H{h}" for h in head_labels]
        text = [[f"{l}{h}" for h in heads] for l in layer_labels]
        fig.add_trace(go.Heatmap(z=grid, x=heads, y=layer_labels, text=text, zmid=0, zmin=-bound, zmax=bound,
                                 colorscale="RdBu", showscale=i == 0,
                                 hovertemplate="%{text}: %{z:.3f}<extra>" + name + "</extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title if len(grids) > 1 else None, template="plotly_white",
                      height=260 * rows + 80, width=None)
    if len(grids) == 1:
        fig.update_layout(title=title)
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
