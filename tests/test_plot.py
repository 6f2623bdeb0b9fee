"""Plot functions: traces, values, labels and reference lines of each figure built from small result objects;
the attention view's HTML (offline, head names, padding stripped, patterns against a padded forward); bad input."""

from __future__ import annotations

import itertools
import json

import plotly.graph_objects as go
import pytest
import torch
from jaxtyping import TypeCheckError
from model_util import write_checkpoint

from reasonlens.errors import ReasonlensError
from reasonlens.model import load_model
from reasonlens.patching.circuit import BandSelection, CircuitResult
from reasonlens.patching.flow import FlowNode, FlowResult
from reasonlens.patching.lens import PriorContextResult
from reasonlens.patching.relations import RelationProbeResult
from reasonlens.plot import (
    attention_view,
    circuit_curves,
    pathway_graph,
    prior_context_curves,
    relation_probe_curves,
)
from reasonlens.results import LabelledTensor


def lines(fig: go.Figure) -> list[dict]:
    """The layout's line shapes (hline / vline) as dicts."""
    return [s.to_plotly_json() for s in fig.layout.shapes]


def circuit(matches: list[list[float]], sizes: list[int], band_keep: int, band_agreements: list[float],
            half_width: int) -> CircuitResult:
    keep = torch.zeros(2, 2, dtype=torch.bool).flatten()
    keep[:band_keep] = True
    return CircuitResult(sizes=sizes, matches=LabelledTensor(torch.tensor(matches, dtype=torch.float), axes=("example", "size")),
                         ranking=["L0H0", "L0H1", "L1H0", "L1H1"], n_layers=2, n_heads=2,
                         band=BandSelection(half_width, keep.view(2, 2), band_agreements))


def test_circuit_curves():
    circuits = {"s0": circuit([[0, 1, 1], [0, 0, 1]], [0, 2, 4], 3, [0.5, 0.75], 1),
                "s1": circuit([[1, 1], [0, 1]], [1, 4], 1, [1.0], 0)}
    fig = circuit_curves(circuits)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["s0", "s0 band", "s1", "s1 band"]
    s0, band0, s1, band1 = fig.data
    assert list(s0.x) == [0, 2, 4] and list(s0.y) == [0.0, 0.5, 1.0]
    assert list(s0.error_y.array) == pytest.approx([0.0, 0.5, 0.0])
    assert (list(band0.x), list(band0.y)) == ([3], [0.75])
    assert (list(s1.x), list(s1.y), list(band1.x), list(band1.y)) == ([1, 4], [0.5, 1.0], [1], [1.0])
    assert band0.marker.color == s0.line.color != s1.line.color == band1.marker.color
    assert not band0.showlegend
    (hline,) = lines(fig)
    assert hline["y0"] == hline["y1"] == 0.9 and hline["line"]["dash"] == "dash"
    # the legend sits below the plot in rows, with room for every subtask (no scroll box)
    many = circuit_curves({f"s{i}: a long subtask name (rule_copy predicate)": circuits["s0"] for i in range(11)})
    assert many.layout.legend.orientation == "h" and many.layout.legend.y < 0
    assert many.layout.height > fig.layout.height and many.layout.margin.b >= 80 + 24 * 4


@pytest.mark.parametrize("bad", [{}, [1]])
def test_circuit_curves_bad_input(bad):
    with pytest.raises(ReasonlensError, match="non-empty dict"):
        circuit_curves(bad)


def prior_result(log_odds: list[list[float]]) -> PriorContextResult:
    odds = torch.tensor(log_odds)  # [example, layer]
    lp = torch.stack([odds - 1.0, torch.full_like(odds, -1.0)], 1)
    return PriorContextResult(LabelledTensor(lp, axes=("example", "token", "layer"),
                                             labels={"token": ["context", "prior"], "layer": ["emb", "L0", "L1"]},
                                             meta={"site": "resid_post"}))


def test_prior_context_curves():
    prior = prior_result([[-1.0, 1.0, 2.0], [-2.0, -1.0, 3.0], [-3.0, 2.0, 1.0]])
    assert prior.crossover_layer == 1
    fig = prior_context_curves(prior)
    wins, odds = fig.data
    assert list(wins.y) == pytest.approx([0.0, 2 / 3, 1.0])
    assert (wins.xaxis, odds.xaxis) == ("x", "x2")
    assert list(odds.y) == pytest.approx(prior.log_odds().mean().tolist())
    assert list(odds.error_y.array) == pytest.approx(prior.log_odds().stderr().tolist())
    assert list(fig.layout.xaxis.ticktext) == list(fig.layout.xaxis2.ticktext) == ["emb", "L0", "L1"]
    shapes = lines(fig)
    horizontal = sorted((s["xref"], s["y0"]) for s in shapes if s["xref"].endswith("domain"))
    assert horizontal == [("x domain", 0.5), ("x2 domain", 0)]
    vertical = sorted((s["xref"], s["x0"]) for s in shapes if s["yref"].endswith("domain"))
    assert vertical == [("x", 1), ("x2", 1)]
    assert "crossover: L0" in fig.layout.title.text


def test_prior_context_curves_without_crossover():
    fig = prior_context_curves(prior_result([[1.0, -1.0, -2.0]]))
    assert not [s for s in lines(fig) if s["yref"].endswith("domain")]
    assert "crossover: none" in fig.layout.title.text


def test_prior_context_curves_no_items():
    with pytest.raises(ReasonlensError, match="no conflict items"):
        prior_context_curves(PriorContextResult(LabelledTensor(torch.zeros(0, 2, 3), axes=("example", "token", "layer"),
                                                               meta={"site": "resid_post"})))


def relation_result() -> RelationProbeResult:
    torch.manual_seed(0)
    values = torch.rand(2, 3, 2, 4)  # [metric, seed, probe, layer]
    return RelationProbeResult(LabelledTensor(values, axes=("metric", "seed", "probe", "layer"),
                                              labels={"metric": ["accuracy", "macro_f1"], "probe": ["linear", "mlp"],
                                                      "layer": ["emb", "L0", "L1", "L2"]},
                                              meta={"chance": 0.34}))


def test_relation_probe_curves():
    result = relation_result()
    fig = relation_probe_curves(result)
    assert [t.name for t in fig.data] == ["linear", "mlp"]
    for p, trace in enumerate(fig.data):
        assert list(trace.y) == pytest.approx(result.mean("accuracy")[p].tolist())
        assert list(trace.error_y.array) == pytest.approx(result.std("accuracy")[p].tolist())
    assert list(fig.layout.xaxis.ticktext) == ["emb", "L0", "L1", "L2"]
    (chance,) = lines(fig)
    assert chance["y0"] == pytest.approx(0.34) and chance["line"]["dash"] == "dash"
    f1 = relation_probe_curves(result, metric="macro_f1")
    assert list(f1.data[1].y) == pytest.approx(result.mean("macro_f1")[1].tolist())


def test_relation_probe_curves_unknown_metric():
    with pytest.raises(ReasonlensError, match="unknown metric"):
        relation_probe_curves(relation_result(), metric="recall")


def flow_result() -> FlowResult:
    """Example 0: root L2H1@9 reads pos 7 (through L1H0@7, which reads pos 2 and pos 5) and pos 8 directly."""
    child = FlowNode(layer=1, head=0, pos=7, token=3, prob=0.4, depth=1, sources=[(2, 0.6), (5, 0.3)])
    root = FlowNode(layer=2, head=1, pos=9, token=5, prob=0.8, depth=0, sources=[(7, 0.5), (8, 0.2)],
                    children=[child])
    other = FlowNode(layer=0, head=1, pos=4, token=5, prob=0.1, depth=0, sources=[(1, 0.9)])
    return FlowResult(roots=[[root], [other]], predicted=[5, 5],
                      regions=[{"question": (0, 4), "cot": (4, 8)}, {"question": (0, 5)}],
                      meta={"n_layers": 3, "n_heads": 2})


def test_pathway_graph():
    flow = flow_result()
    tokens = [f"t{i}" for i in range(10)]
    fig = pathway_graph(flow, 0, tokens=tokens)
    nodes = {t.name: {text: (x, y) for text, x, y in zip(t.hovertext, t.x, t.y)} for t in fig.data}
    assert list(nodes) == ["heads", "question", "cot", "other", "output"]
    assert nodes["heads"] == {"L1H0@7: 't7'": (7, 1), "L2H1@9: 't9'": (9, 2)}
    assert nodes["question"] == {"pos 2: 't2'": (2, -1)}
    assert nodes["cot"] == {"pos 5: 't5'": (5, -1)}
    assert nodes["other"] == {"pos 8: 't8'": (8, -1)}
    assert nodes["output"] == {"output": (10, 3)}
    colours = {t.name: t.marker.color for t in fig.data}
    assert len({colours["cot"], colours["other"], colours["question"]}) == 3
    arrows = {((a.ax, a.ay), (a.x, a.y)) for a in fig.layout.annotations}
    assert arrows == {((9, 2), (10, 3)), ((7, 1), (9, 2)), ((8, -1), (9, 2)), ((2, -1), (7, 1)), ((5, -1), (7, 1))}
    assert len(fig.layout.annotations) == len(flow.edges(0))
    assert list(fig.layout.yaxis.ticktext) == ["source", "L0", "L1", "L2"]


def test_pathway_graph_without_tokens():
    fig = pathway_graph(flow_result(), 1)
    assert [list(t.hovertext) for t in fig.data] == [["L0H1@4"], ["pos 1"], ["output"]]


def test_pathway_graph_bad_input():
    with pytest.raises(ReasonlensError, match="example must be in 0..1"):
        pathway_graph(flow_result(), 2)
    with pytest.raises(ReasonlensError, match="reaches position 9 but 5 tokens"):
        pathway_graph(flow_result(), 0, tokens=["a"] * 5)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_checkpoint(tmp_path_factory.mktemp("plot") / "llama", "llama", scale=3.0))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL fails the test."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("attention_view tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def embedded_props(html: str) -> dict:
    """The props passed to CircuitsVis.render in the HTML."""
    props = html[html.rindex("CircuitsVis.AttentionHeads,") + len("CircuitsVis.AttentionHeads,"):]
    return json.loads(props[:props.rindex(")")])


def test_attention_view(model, no_network):
    ids = model.tokenizer("Every wumpus is wooden. Rex is a wumpus.")["input_ids"]
    html = attention_view(model, ids, ["L1H3", "L0H2"])
    assert isinstance(html, str)
    assert "L1H3" in html and "L0H2" in html and "wumpus" in html
    assert "unpkg.com" not in html and "CircuitsVis.render" in html
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([ids]))
    expected = torch.stack([cache["blocks.1.attn.hook_pattern"][0, 3], cache["blocks.0.attn.hook_pattern"][0, 2]])
    props = embedded_props(html)
    assert props["attentionHeadNames"] == ["L1H3", "L0H2"]
    torch.testing.assert_close(torch.tensor(props["attention"]), expected, atol=1e-5, rtol=0)


def test_attention_view_strips_left_padding(model, no_network):
    """Padded with a mask, the view shows the real tokens only, with the patterns of the padded forward (mask and
    position ids from the first real token, as reasonlens.generation runs batches)."""
    ids = model.tokenizer("Rex is a wumpus.")["input_ids"]
    pad = model.tokenizer.pad_token_id
    tokens = torch.tensor([pad, pad, pad, *ids])
    mask = torch.tensor([0, 0, 0] + [1] * len(ids))
    html = attention_view(model, tokens, ["L1H0"], attention_mask=mask)
    props = embedded_props(html)
    assert props["tokens"] == model.tokenizer.convert_ids_to_tokens(ids)
    saved = {}

    def save(pattern, hook):
        saved["pattern"] = pattern.detach().clone()

    positions = (mask.cumsum(0) - 1).clamp_min(0)
    with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", save)]):
        model(tokens[None], attention_mask=mask[None], position_ids=positions[None])
    expected = saved["pattern"][0, 0, 3:, 3:]
    torch.testing.assert_close(torch.tensor(props["attention"][0]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads, message", [(["L2H0"], "unknown head 'L2H0'"), (["L0H4"], "unknown head"),
                                            (["head 3"], "unknown head"), ([], "heads is empty")])
def test_attention_view_bad_heads(model, heads, message):
    with pytest.raises(ReasonlensError, match=message):
        attention_view(model, [1, 4, 27], heads)


def test_attention_view_bad_tokens(model):
    with pytest.raises(ReasonlensError, match="one non-empty prompt"):
        attention_view(model, torch.zeros(0, dtype=torch.long), ["L0H0"])
    with pytest.raises((ReasonlensError, TypeCheckError)):  # the jaxtyping hook of the test run checks first
        attention_view(model, torch.tensor([[1, 4, 27]]), ["L0H0"])
    with pytest.raises(ReasonlensError, match="outside the vocabulary"):
        attention_view(model, [1, 10**6], ["L0H0"])
    with pytest.raises(ReasonlensError, match="left-padded"):
        attention_view(model, [1, 4, 27], ["L0H0"], attention_mask=torch.tensor([1, 1, 0]))
    with pytest.raises(ReasonlensError, match="left-padded"):
        attention_view(model, [1, 4, 27], ["L0H0"], attention_mask=torch.tensor([1, 1]))


def test_head_heatmap_limits_are_robust_per_facet_and_mark_clipped_cells():
    """Two outlying cells (as per-example KL ratios give) no longer wash out a facet; a facet of small scores is
    as readable as one of large scores; every facet shows most of its varying cells visibly away from zero."""
    from reasonlens.plot import head_heatmap

    generator = torch.Generator().manual_seed(0)
    typical = torch.randn(6, 4, generator=generator) * 0.3
    outliers = typical.clone()
    outliers[1, 2], outliers[4, 0] = -60.0, -58.0
    small = typical * 0.01
    fig = head_heatmap({"outliers": outliers, "typical": typical, "small": small})
    for trace, data in zip(fig.data, (outliers, typical, small)):
        colours = torch.tensor(trace.z, dtype=torch.float64)
        varying = (data.abs() > 0.05 * data.abs().median()).sum()
        visible = (colours.abs() >= 0.1).sum()
        assert visible >= 0.6 * varying  # no panel the colour of zero while its data vary
        assert colours.abs().max() <= 1
    marks = [[cell for cell in row] for row in fig.data[0].text]
    assert marks[1][2] == "◆" and marks[4][0] == "◆" and sum(cell == "◆" for row in marks for cell in row) == 2
    assert fig.data[1].text.tolist() == [[""] * 4] * 6  # nothing clipped without outliers
    titles = [a.text for a in fig.layout.annotations]
    limit = float(typical.abs().max())
    assert titles[1] == f"typical (±{limit:.3g})" and titles[2] == f"small (±{limit * 0.01:.3g})"
    assert float(fig.data[0].customdata[1][2][1]) == -60.0  # hover keeps the raw score
    assert head_heatmap(typical, zmax=2.0).layout.annotations[0].text.endswith("(±2)")


def test_pathway_graph_labels_tokens_and_keeps_labels_apart():
    from reasonlens.patching.flow import FlowNode, FlowResult

    # two heads of one layer at one position, sources at neighbouring positions
    root = FlowNode(layer=2, head=0, pos=6, token=7, prob=0.5, depth=0, sources=[(5, 0.4), (4, 0.3)])
    twin = FlowNode(layer=2, head=1, pos=6, token=7, prob=0.5, depth=0, sources=[(5, 0.4)])
    flow = FlowResult([[root, twin]], [7], [{"question": (0, 7)}], {"n_layers": 3})
    tokens = [" q", " every", " cat", " is", " red", " .", " rex"]
    fig = pathway_graph(flow, 0, tokens=tokens)
    heads = next(t for t in fig.data if t.name == "heads")
    assert len(heads.x) == 2 and heads.x[0] != heads.x[1] and heads.y[0] == heads.y[1]  # spread, not stacked
    sources = next(t for t in fig.data if t.name == "question")
    assert sorted(sources.text) == [".", "red"] and len(set(sources.textposition)) == 2  # above / below
    assert list(fig.layout.xaxis.ticktext) == ["red (4)", ". (5)", "rex (6)"]
    assert list(fig.layout.xaxis.tickvals) == [4, 5, 6]


def test_pathway_graph_leaves_crowded_labels_to_the_hover_text():
    from reasonlens.patching.flow import FlowNode, FlowResult

    # eight layer-0 heads at neighbouring positions of a 40-token prompt, all read by one root
    leaves = [FlowNode(layer=0, head=h % 4, pos=10 + h // 2, token=7, prob=0.5, depth=1, sources=[(10 + h // 2, 0.5)])
              for h in range(8)]
    root = FlowNode(layer=1, head=0, pos=39, token=7, prob=0.5, depth=0, sources=[(10 + h // 2, 0.2) for h in range(8)],
                    children=leaves)
    flow = FlowResult([[root]], [7], [{"question": (0, 40)}], {"n_layers": 2})
    fig = pathway_graph(flow, 0, tokens=[f" w{i}" for i in range(40)])
    heads = next(t for t in fig.data if t.name == "heads")
    character = 7 / (900 / (40 + 1.3))
    shown = [(x, y, label, side) for x, y, label, side in zip(heads.x, heads.y, heads.text, heads.textposition)
             if label]
    hidden = len(heads.text) - len(shown)
    assert 0 < hidden < len(heads.text)
    for a, b in itertools.combinations(shown, 2):
        if a[1] == b[1] and a[3] == b[3]:  # one row, one side: the estimated extents do not overlap
            assert abs(a[0] - b[0]) >= (len(a[2]) + len(b[2])) * character / 2
    assert f"{hidden} labels without room" in fig.layout.title.text
    assert sorted(heads.hovertext)[0].startswith("L0H0@10")  # every node keeps its hover text
