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
