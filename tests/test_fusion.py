"""Fused attention in exported graphs (service/export/fusion.py), on small torch towers: fused
where the fused operator computes what the module computes, left alone where it does not, and a
fused graph kept only when it matches torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.export.fusion import DOMAIN, fuse_tower
from service.export.onnx_towers import TowerGraph, export_tower

pytestmark = pytest.mark.export

WIDTH, SEQ = 32, 6


class Tower(torch.nn.Module):
    """One pre-norm transformer block the way OpenCLIP builds them, pooled to a vector."""

    def __init__(self, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(WIDTH)
        self.attn = torch.nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(WIDTH, 2 * WIDTH), torch.nn.GELU(), torch.nn.Linear(2 * WIDTH, WIDTH)
        )
        self.register_buffer("mask", mask)
        self.proj = torch.nn.Linear(WIDTH, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask)[0]
        x = x + self.mlp(x)
        return self.proj(x[:, -1])  # the last token: what a causal mask changes most


def _tower(mask: torch.Tensor | None) -> Tower:
    torch.manual_seed(0)
    return Tower(mask).eval()


def _exported(tower: Tower, tmp_path: Path, inputs: torch.Tensor) -> TowerGraph:
    path = tmp_path / "tower" / "1" / "model.onnx"
    graph = TowerGraph("text", tower, (inputs[:2],), ["x"], "y", path)
    export_tower(graph)
    return graph


def _attention_nodes(path: Path) -> list[onnx.NodeProto]:
    graph = onnx.load(str(path)).graph
    return [n for n in graph.node if n.op_type == "Attention" and n.domain == DOMAIN]


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x.numpy()})[0])


CAUSAL = torch.full((SEQ, SEQ), float("-inf")).triu(1)


@pytest.mark.parametrize("mask, causal", [(None, 0), (CAUSAL, 1)])
def test_attention_fused_causal_or_not_and_equal_to_torch(
    tmp_path: Path, mask: torch.Tensor | None, causal: int
) -> None:
    tower = _tower(mask)
    x = torch.randn(7, SEQ, WIDTH)
    graph = _exported(tower, tmp_path, x)
    path = graph.path
    assert not _attention_nodes(path)  # the plain export: attention as separate nodes
    report = fuse_tower(graph, (x,), threshold=0.9999)
    assert report.kept and report.rejected == ""
    assert (report.attention_modules, report.attention_fused) == (1, 1)
    (node,) = _attention_nodes(path)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["unidirectional"] == causal and attrs["num_heads"] == 4
    assert report.ops["Attention"] == 1 and report.ops["BiasGelu"] == 1  # GELU + its bias
    assert not [n for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax"]
    for batch in (1, 3, 7):
        with torch.no_grad():
            want = tower(x[:batch]).numpy()
        np.testing.assert_allclose(_run(path, x[:batch]), want, atol=1e-4, rtol=1e-4)


def test_attention_the_operator_cannot_express_is_left_alone(tmp_path: Path) -> None:
    """An arbitrary additive mask (neither none nor causal): traced as it is, still correct."""
    torch.manual_seed(1)
    tower = _tower(torch.randn(SEQ, SEQ))
    x = torch.randn(5, SEQ, WIDTH)
    graph = _exported(tower, tmp_path, x)
    path = graph.path
    report = fuse_tower(graph, (x,), threshold=0.9999)
    assert (report.attention_modules, report.attention_fused) == (1, 0)
    assert report.kept and "Attention" not in report.ops and not _attention_nodes(path)
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x), tower(x).numpy(), atol=1e-4, rtol=1e-4)


def test_fused_graph_is_dropped_when_it_misses_the_threshold(tmp_path: Path) -> None:
    tower = _tower(CAUSAL)
    x = torch.randn(4, SEQ, WIDTH)
    graph = _exported(tower, tmp_path, x)
    path = graph.path
    plain = path.read_bytes()
    report = fuse_tower(graph, (x,), threshold=1.5)  # no graph can reach it
    assert not report.kept and "differs from torch" in report.rejected
    assert path.read_bytes() == plain
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no leftovers


class MaskedTower(Tower):
    """A causal block with a second input, the attention mask, as Hugging Face text towers
    take it: pooled at each row's last real token ("eot", the same whatever padding follows)
    or at the last position ("last", which the padding changes)."""

    def __init__(self, pool: str) -> None:
        super().__init__(CAUSAL)
        self.pool = pool

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        x = x * mask[..., None]  # padding embedded as zeros (and both pools use the mask)
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask[:s, :s])[0]
        x = x + self.mlp(x)
        if self.pool == "last":
            return self.proj(x[:, -1])
        return self.proj(x[torch.arange(x.shape[0]), mask.sum(dim=1) - 1])


@pytest.mark.parametrize("pool, trims", [("eot", True), ("last", False)])
def test_two_input_tower_fused_and_cut_only_where_the_padding_is_ignored(
    tmp_path: Path, pool: str, trims: bool
) -> None:
    torch.manual_seed(0)
    tower = MaskedTower(pool).eval()
    lengths = np.array([6, 2, 4, 3, 1])
    mask = torch.from_numpy((np.arange(SEQ) < lengths[:, None]).astype(np.int64))
    x = torch.randn(5, SEQ, WIDTH)
    path = tmp_path / "text" / "1" / "model.onnx"
    graph = TowerGraph("text", tower, (x[:2], mask[:2]), ["x", "mask"], "y", path)
    export_tower(graph)
    report = fuse_tower(graph, (x, mask), 0.9999, lengths=lengths)
    assert report.kept and report.rejected == "", report
    assert (report.attention_modules, report.attention_fused) == (1, 1)
    assert report.trims_padding is trims
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    width = int(lengths[1:3].max())  # rows 1-2 cut after their longest
    feeds = {"x": x[1:3, :width].numpy(), "mask": mask[1:3, :width].numpy()}
    with torch.no_grad():
        want = tower(x[1:3], mask[1:3]).numpy()
    close = np.allclose(session.run(None, feeds)[0], want, atol=1e-4, rtol=1e-4)
    assert close is trims
