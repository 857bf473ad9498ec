"""Fused attention, layer-norm, GELU and bias nodes in exported towers (onnxruntime contrib ops).

Why: a tower exported op by op runs each attention as a dozen small nodes (projections, reshapes,
transposes, two batched matmuls, a softmax), and onnxruntime's own attention fusion does not
recognise the patterns today's exporters write for CLIP (it finds nothing to fuse). So the export
emits the fused operator itself: while the tower is traced, each self-attention module it knows
(`torch.nn.MultiheadAttention` as in OpenCLIP, and Hugging Face's CLIP / SigLIP attention with
q/k/v/out projections) is traced as one `com.microsoft.Attention` node (packed QKV weights, one
GEMM, causal or not), followed by its output projection. onnxruntime's transformer optimizer then
fuses layer norms, GELU / QuickGELU and their biases, at its portable level (no hardware-specific
nodes); residual + layer norm are left unfused (see `optimize_transformer`).

A module is fused only when the fused computation reproduces it on the traced input (with or
without a causal mask, whichever matches); anything else is traced as it is. The fused graph is
kept only when it matches the torch tower on real inputs at several batch sizes; otherwise the
plain graph stays and the reason is recorded.

The text tower is traced with a dynamic sequence axis, and where the graph gives the same
embeddings without the padding after a batch's longest text, the manifest says so
(`trim_padding`) and the runner cuts it. On a 2-core Xeon the Attention node itself ran about
as fast as onnxruntime's CPU fusions of the plain graph; the cut padding is what made short
texts 3-7x cheaper (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.export.onnx_towers import TowerGraph, export_tower
from service.export.parity import THRESHOLDS, cosines
from service.export.source import SourceModel
from service.manifest import Manifest

DOMAIN = "com.microsoft"
# operators the optimizer may write; counted in the manifest
FUSED_OPS = (
    "Attention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "QuickGelu",
    "BiasAdd",
)


# self-attention modules called while tracing (by id) -> whether they were traced fused
Seen = dict[int, bool]


class _AttentionOp(torch.autograd.Function):
    """Self-attention over packed QKV weights: eager math when traced, one ONNX node when
    exported (onnxruntime's `com.microsoft.Attention`, CPU and CUDA kernels)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        num_heads: int,
        scale: float,
        causal: int,
    ) -> torch.Tensor:
        return attention_reference(x, weight, bias, num_heads, scale, bool(causal))

    @staticmethod
    def symbolic(
        g: Any,
        x: Any,
        weight: Any,
        bias: Any,
        num_heads: int,
        scale: float,
        causal: int,
    ) -> Any:
        out = g.op(
            f"{DOMAIN}::Attention",
            x,
            weight,
            bias,
            num_heads_i=num_heads,
            scale_f=scale,
            unidirectional_i=causal,
        )
        out.setType(x.type())
        return out


def attention_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    num_heads: int,
    scale: float,
    causal: bool,
) -> torch.Tensor:
    """What the Attention node computes: x (B,S,D) @ weight (D,3D) + bias, split into heads,
    softmax(q k^T * scale [+ causal mask]) v, heads merged back to (B,S,D)."""
    b, s, _ = x.shape
    q, k, v = (x @ weight + bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, s, num_heads, -1).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        future = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, s, -1)


@dataclass
class _Packed:
    """One self-attention module in the Attention node's layout, plus its output projection."""

    weight: torch.Tensor  # (D, 3D): q | k | v columns
    bias: torch.Tensor  # (3D,)
    num_heads: int
    scale: float
    out_weight: torch.Tensor
    out_bias: torch.Tensor | None

    def project(self, attn: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(attn, self.out_weight, self.out_bias)

    def attend(self, x: torch.Tensor, want: torch.Tensor) -> torch.Tensor | None:
        """The fused attention + output projection of `x` when it reproduces `want` (what the
        module itself returns for `x`), with or without a causal mask; else None."""
        args = (self.weight, self.bias, self.num_heads, self.scale)
        with torch.no_grad():
            for causal in (0, 1):
                got = self.project(attention_reference(x, *args, bool(causal)))
                if got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-3):
                    break
            else:
                return None
        return self.project(_AttentionOp.apply(x, *args, causal))


def _detached(linear: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    assert isinstance(linear, torch.nn.Linear)
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()


def _patch_torch_mha(module: torch.nn.Module, seen: Seen) -> Callable[..., Any]:
    """OpenCLIP's blocks call `attn(x, x, x, need_weights=False, attn_mask=causal or None)`."""
    assert isinstance(module, torch.nn.MultiheadAttention)
    plain = module.forward
    weight, bias = module.in_proj_weight, module.in_proj_bias
    if (
        not module._qkv_same_embed_dim
        or weight is None
        or module.bias_k is not None
        or module.add_zero_attn
    ):
        return plain
    packed = _Packed(
        weight.detach().t().contiguous(),
        bias.detach() if bias is not None else torch.zeros(weight.shape[0]),
        module.num_heads,
        module.head_dim**-0.5,
        *_detached(module.out_proj),
    )
    batch_first = module.batch_first

    def forward(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = plain(
            query,
            key,
            value,
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
        )
        if query is not key or key is not value or key_padding_mask is not None or need_weights:
            return out, weights
        x = query if batch_first else query.transpose(0, 1)
        fused = packed.attend(x, out if batch_first else out.transpose(0, 1))
        seen.setdefault(id(module), fused is not None)
        if fused is None:
            return out, weights
        return (fused if batch_first else fused.transpose(0, 1)), None

    return forward


def _patch_qkv_out(module: torch.nn.Module, seen: Seen) -> Callable[..., Any]:
    """Hugging Face CLIP / SigLIP attention: `forward(hidden_states, attention_mask, **kw)`
    returning (output, weights)."""
    plain = module.forward
    q, k, v = (_detached(getattr(module, n)) for n in ("q_proj", "k_proj", "v_proj"))
    weight = torch.cat([q[0], k[0], v[0]]).t().contiguous()
    biases = [b if b is not None else torch.zeros(w.shape[0]) for w, b in (q, k, v)]
    packed = _Packed(
        weight,
        torch.cat(biases),
        int(getattr(module, "num_heads")),  # noqa: B009 - a torch.nn.Module attribute
        float(getattr(module, "scale")),  # noqa: B009
        *_detached(getattr(module, "out_proj")),  # noqa: B009
    )

    def forward(
        hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = plain(hidden_states, attention_mask, **kwargs)
        fused = packed.attend(hidden_states, out)
        seen.setdefault(id(module), fused is not None)
        return (out, weights) if fused is None else (fused, None)

    return forward


def _patcher(module: torch.nn.Module) -> Callable[[Any, Seen], Callable[..., Any]] | None:
    if isinstance(module, torch.nn.MultiheadAttention):
        return _patch_torch_mha
    projections = [getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
    if (
        all(isinstance(p, torch.nn.Linear) for p in projections)
        and hasattr(module, "num_heads")
        and hasattr(module, "scale")
    ):
        return _patch_qkv_out
    return None


@contextlib.contextmanager
def fused_attention(tower: torch.nn.Module) -> Iterator[Seen]:
    """Within the block, known self-attention modules of `tower` trace as fused nodes. `seen`,
    filled on their first call, says which modules ran and whether they fused. The modules are
    restored afterwards."""
    seen: Seen = {}
    patched = []
    for module in tower.modules():
        patch = _patcher(module)
        if patch is not None:
            module.forward = patch(module, seen)
            patched.append(module)
    try:
        yield seen
    finally:
        for module in patched:
            del module.forward


@dataclass
class FusionReport:
    """What the fusion step did to one tower (recorded in the manifest)."""

    kept: bool
    ops: dict[str, int] = field(default_factory=dict)  # fused operators in the fused graph
    attention_modules: int = 0  # self-attention modules the torch tower ran
    attention_fused: int = 0  # of which traced as one Attention node
    rejected: str = ""  # why the fused graph was not kept
    trims_padding: bool = False  # same embeddings with the padding after the longest row cut

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def count_fused_ops(model: Any) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node if n.domain == DOMAIN)
    counts.update(
        n.op_type for n in model.graph.node if n.op_type == "LayerNormalization" and not n.domain
    )
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def optimize_transformer(model: Any) -> Any:
    """onnxruntime's transformer fusions in Python only (opt_level 0): skip + layer norm,
    GELU / QuickGELU and bias fusions. No onnxruntime session optimisations are baked in, so the
    graph stays portable across CPU, CUDA, TensorRT and Triton."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("clip")
    options.enable_attention = False  # done at export; its CLIP patterns find nothing anyway
    # residual + layer norm stay an Add and a LayerNormalization: onnxruntime's CPU kernel for
    # the fused SkipLayerNormalization ran 13x slower than the two nodes (towers 1.1-1.4x less CPU
    # without it, benchmarks/README.md). GPUs lose that fusion (not measured: docs/architecture.md)
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    optimized = optimize_model(model, model_type="clip", opt_level=0, optimization_options=options)
    optimized.topological_sort()
    fused = optimized.model
    # a tower without attention (FastViT) is exported without the contrib domain, and the
    # optimizer adds its Gelu / SkipLayerNormalization nodes without importing it: onnxruntime
    # loads that, but ONNX shape inference (fp16 conversion, quantization) refuses it
    if any(n.domain == DOMAIN for n in fused.graph.node) and DOMAIN not in {
        o.domain for o in fused.opset_import
    }:
        fused.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return fused


class TowerFusion:
    """The export's "fuse" graph step (pipeline.graph_steps, after onnxslim, before fp16): fuses
    each tower of a fresh fp32 export in place (tokenizer.json already written), checked on the
    parity report's real photos and sentences; sets the text tower's `trim_padding` when its
    fused graph allows it, and keeps the reports for the manifest (`export.fusions`)."""

    def __init__(
        self, src: SourceModel, model_dir: Path, manifest: Manifest, simplified: bool
    ) -> None:
        self.src, self.model_dir, self.manifest, self.simplified = (
            src,
            model_dir,
            manifest,
            simplified,
        )
        self.reports: dict[str, dict[str, object]] = {}

    def _checks(self, graph: TowerGraph) -> tuple[tuple[torch.Tensor, ...], np.ndarray | None]:
        """Real inputs for `graph` (in its input order) and, for text, tokens per row."""
        from PIL import Image

        from service.export.parity_inputs import SENTENCES, photos
        from service.texts import TextTokenizer

        if graph.name == "image":
            images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in photos()]
            return (torch.from_numpy(self.src.reference_pixels(images)),), None
        assert self.manifest.text is not None
        tokens = self.src.reference_tokens(SENTENCES)
        _, mask = TextTokenizer(self.manifest.text, self.model_dir).encode(SENTENCES)
        checks = tuple(torch.from_numpy(tokens[name]) for name in graph.input_names)
        return checks, mask.sum(axis=1)

    def __call__(self, graph: TowerGraph) -> None:
        checks, lengths = self._checks(graph)
        report = fuse_tower(graph, checks, THRESHOLDS["fp32"], self.simplified, lengths)
        self.manifest.towers[graph.name].trim_padding = report.trims_padding
        self.reports[graph.name] = report.as_dict()


def fuse_tower(
    graph: TowerGraph,
    checks: tuple[torch.Tensor, ...],
    threshold: float,
    simplified: bool = True,
    lengths: np.ndarray | None = None,
) -> FusionReport:
    """Replace the plain graph at `graph.path` by a fused one when the fused graph matches the
    torch tower on `checks` (real inputs, one tensor per graph input; the first two rows are
    traced) at batch 1, 3 and all of them: cosine >= `threshold` per item and close values.
    Otherwise the graph file is left alone and the report says why.

    With `lengths` (tokens per row of `checks`, padding excluded) the graph takes sequences of
    any length, and `trims_padding` says whether it gives the same embeddings for a batch cut
    after its longest row, and for each row cut to its own length (causal towers pooling at
    the end-of-text token do; towers attending to or pooling over the padding do not)."""
    import onnx

    candidate = replace(
        graph,
        examples=tuple(c[:2] for c in checks),
        path=graph.path.with_name("fused.onnx"),
    )
    seen: Seen = {}
    trims = False
    try:
        with fused_attention(graph.tower) as seen:
            export_tower(candidate, {DOMAIN: 1}, sequence_axis=lengths is not None)
        model = onnx.load(str(candidate.path))
        if simplified:
            import onnxslim

            model = onnxslim.slim(model)
        model = optimize_transformer(model)
        ops = count_fused_ops(model)
        onnx.save(model, str(candidate.path))
        problem = _mismatch(candidate, checks, threshold)
        if not problem and lengths is not None:
            trims = _trims_padding(candidate, checks, threshold, lengths)
    except Exception as exc:  # an exporter or optimiser that chokes leaves the plain graph
        candidate.path.unlink(missing_ok=True)
        problem, ops = f"fusion failed: {type(exc).__name__}: {exc}", {}
    report = FusionReport(not problem, ops, len(seen), sum(seen.values()), problem, trims)
    if problem:
        candidate.path.unlink(missing_ok=True)
    else:
        candidate.path.replace(graph.path)
    return report


def _trims_padding(
    graph: TowerGraph, checks: tuple[torch.Tensor, ...], threshold: float, lengths: np.ndarray
) -> bool:
    try:
        return not _mismatch(graph, checks, threshold, lengths)
    except Exception:  # a graph with a fixed sequence length refuses shorter ones
        return False


def _mismatch(
    graph: TowerGraph,
    checks: tuple[torch.Tensor, ...],
    threshold: float,
    lengths: np.ndarray | None = None,
) -> str:
    """Why the graph file is not the torch tower's function, or "" when it is; with
    `lengths`, the graph is fed each batch cut after its longest row (and each row alone, cut
    to its own length) while torch sees the full rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    rows = len(checks[0])
    batches = [(0, b) for b in sorted({1, min(3, rows), rows})]
    if lengths is not None:
        batches += [(i, i + 1) for i in range(rows)]
    for start, end in batches:
        xs = [c[start:end] for c in checks]
        width = None if lengths is None else int(lengths[start:end].max())
        feeds = {n: x[:, :width].numpy() for n, x in zip(graph.input_names, xs, strict=True)}
        got = session.run(None, feeds)[0]
        with torch.no_grad():
            want = graph.tower(*xs).numpy()
        if got.shape != want.shape:
            return f"fused graph: shape {got.shape} at rows {start}-{end}, torch gives {want.shape}"
        low = float(cosines(got, want).min())
        if low < threshold or not np.allclose(got, want, atol=1e-3, rtol=1e-3):
            return f"fused graph differs from torch at rows {start}-{end}: min cosine {low:.6f}"
    return ""
