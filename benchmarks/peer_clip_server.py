"""clip-as-service (Jina's `clip-server` 0.8.3) on the peer model of benchmarks/peers.py.

clip-server's ONNX executor loads `textual.onnx` + `visual.onnx` from `model_path`; `build` makes
them from clipserve's export of /tmp/peer-clip (same weights, same graphs): the image tower as is
(input `pixel_values`), the text tower with clip-server's feed (int32 `input_ids` cast to int64,
int32 `attention_mask` accepted and unused: the tower is causal and pools at the first EOT).
`name: ViT-B-32::openai` picks matching preprocessing: 224 px bicubic resize + centre crop, CLIP
mean/std, OpenAI BPE with 77 tokens. `bench` is a closed-loop gRPC load generator (unary
JinaSingleDataRequestRPC, pre-serialised one-item requests) on the texts and 600x400 JPEGs of
`clipserve bench` (service/bench.py); `verify` compares both servers' embeddings.

Install (own venv; clip-server's pins conflict, so resolve ahead and install without deps):
    python3.11 -m venv .tools/cas-venv && .tools/cas-venv/bin/pip install uv 'setuptools<81'
    printf 'clip-server==0.8.3\nonnxruntime==1.32.0\nsetuptools<81\npydantic<2\n' > cas.in
    echo 'protobuf>=5.26.1,<6' > cas-override.txt   # open_clip 2.8 pins protobuf 3.20
    .tools/cas-venv/bin/uv pip compile cas.in --python .tools/cas-venv/bin/python \
        --override cas-override.txt -o cas.txt   # plus --constraint <pip's constraints file>
    .tools/cas-venv/bin/pip install --no-deps -r cas.txt

Run (clip-server alone, then clipserve alone, same load):
    .venv/bin/python benchmarks/peer_clip_server.py build /tmp/peer-clip-cas   # needs onnx
    NO_VERSION_CHECK=1 JINA_OPTOUT_TELEMETRY=1 [OMP_NUM_THREADS=1] \
        .tools/cas-venv/bin/python -m clip_server /tmp/peer-clip-cas/flow.yml
    .tools/cas-venv/bin/python benchmarks/peer_clip_server.py verify --url http://127.0.0.1:8000
    .tools/cas-venv/bin/python benchmarks/peer_clip_server.py bench --modality text|image \
        --concurrency 1 8 32 --duration 6 [--batch 8]
Without OMP_NUM_THREADS the executor gives onnxruntime 2 x torch threads (4 on 2 cores) in
ORT_PARALLEL mode, which oversubscribes a small machine; OMP_NUM_THREADS=1 leaves ORT defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPORT = Path("/tmp/peer-clip-repo/peer-clip")
FLOW = """jtype: Flow
version: '1'
with:
  port: {port}
  protocol: grpc
executors:
  - name: clip_o
    uses:
      jtype: CLIPEncoder
      with:
        name: ViT-B-32::openai
        model_path: {folder}
      metas:
        py_modules:
          - clip_server.executors.clip_onnx
    timeout_ready: 3000000
    replicas: 1
"""


def build(folder: Path, port: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.load(EXPORT / "image/1/model.onnx"), folder / "visual.onnx")
    text = onnx.load(EXPORT / "text/1/model.onnx")
    graph = text.graph
    (ids,) = graph.input
    for node in graph.node:  # the old int64 input becomes the output of a Cast
        node.input[:] = ["input_ids_i64" if n == ids.name else n for n in node.input]
    graph.node.insert(0, helper.make_node("Cast", ["input_ids"], ["input_ids_i64"], to=7))
    graph.input.pop()
    for name in ("input_ids", "attention_mask"):
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", 77]))
    onnx.checker.check_model(text)
    onnx.save(text, folder / "textual.onnx")
    (folder / "flow.yml").write_text(FLOW.format(port=port, folder=folder))
    print(f"wrote {folder}/textual.onnx, visual.onnx, flow.yml (gRPC port {port})")


def _bench_items(modality: str) -> list[dict[str, Any]]:
    """The 16 one-item payloads of `clipserve bench`: texts, or 600x400 JPEGs (data URI + raw)."""
    sys.path.insert(0, str(ROOT))
    from service.bench import BenchConfig, _payloads

    return [item for (item,) in _payloads(BenchConfig(modality=modality))]


def _payloads(modality: str, batch: int = 1) -> list[bytes]:
    """Serialised DataRequestProtos of `batch` items each, as `clipserve bench --batch` sends
    them (an image as raw JPEG bytes in `blob`)."""
    from docarray import Document, DocumentArray
    from jina.types.request.data import DataRequest

    items = _bench_items(modality)
    out = []
    for i in range(len(items)):
        docs = []
        for j in range(batch):
            item = items[(i + j) % len(items)]
            text = modality == "text"
            docs.append(Document(text=item["text"]) if text else Document(blob=item["raw"]))
        req = DataRequest()
        req.header.exec_endpoint = "/"
        req.data.docs = DocumentArray(docs)
        out.append(req.proto.SerializeToString())
    return out


def _channel(port: int) -> tuple[Any, Any]:
    import grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        "/jina.JinaSingleDataRequestRPC/process_single_data",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    return channel, call


def _embeddings(raw: bytes) -> Any:
    from jina.types.request.data import DataRequest

    resp = DataRequest(raw)
    if resp.status.code != 0:
        raise RuntimeError(resp.status.description)
    return resp.docs.embeddings


async def bench(
    port: int, modality: str, concurrency: int, duration: float, batch: int = 1
) -> dict[str, Any]:
    import numpy as np
    from jina.types.request.data import DataRequest

    payloads = _payloads(modality, batch)
    channel, call = _channel(port)
    for p in payloads[:5]:  # warm-up, as clipserve bench
        _embeddings(await call(p))
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def worker(k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            raw = await call(payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - t0)
            errors += DataRequest(raw).status.code != 0  # 0: SUCCESS
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    seconds = time.perf_counter() - started
    await channel.close()
    ms = np.asarray(latencies) * 1000
    row = {
        "modality": modality,
        "concurrency": concurrency,
        "batch": batch,
        "items_per_s": (len(latencies) - errors) * batch / seconds,
        "errors": errors,
        **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)},
    }
    print(
        f"{modality:>6} c={concurrency:<3} b={batch:<3} {row['items_per_s']:8.1f} items/s  "
        f"p50 {row['p50']:7.1f}"
        f" ms  p95 {row['p95']:7.1f} ms  p99 {row['p99']:7.1f} ms  errors {errors}"
    )
    return row


async def verify(port: int, url: str) -> None:
    """Cosine between clip-server's and clipserve's embeddings of the bench texts and 600x400
    JPEGs (the random model maps different images to cosine ~0.98, so read 1 - cosine)."""
    import aiohttp
    import numpy as np

    channel, call = _channel(port)
    async with aiohttp.ClientSession(url) as session:
        for modality in ("text", "image"):
            cosines = []
            for raw, item in zip(_payloads(modality), _bench_items(modality), strict=True):
                theirs = _embeddings(await call(raw))[0]
                body = {"input": [item[modality]], "modality": modality, "encoding_format": "float"}
                async with session.post(
                    "/v1/embeddings",
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    ours = np.asarray((await resp.json())["data"][0]["embedding"])
                cosines.append(float(ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs)))
            print(
                f"{modality}: {len(cosines)} items, min cosine {min(cosines):.7f}"
                f" (1 - cos max {1 - min(cosines):.1e})"
            )
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("folder", type=Path)
    b.add_argument("--port", type=int, default=51000)
    v = sub.add_parser("verify")
    v.add_argument("--port", type=int, default=51000)
    v.add_argument("--url", default="http://127.0.0.1:8000")
    r = sub.add_parser("bench")
    r.add_argument("--port", type=int, default=51000)
    r.add_argument("--modality", choices=("text", "image"), default="text")
    r.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    r.add_argument("--duration", type=float, default=6.0)
    r.add_argument("--batch", type=int, default=1, help="items per request")
    r.add_argument("--json", action="store_true", help="also print each result as a JSON line")
    args = parser.parse_args()
    if args.cmd == "build":
        build(args.folder, args.port)
    elif args.cmd == "verify":
        asyncio.run(verify(args.port, args.url))
    else:
        for c in args.concurrency:
            row = asyncio.run(bench(args.port, args.modality, c, args.duration, args.batch))
            if args.json:
                print(json.dumps(row))


if __name__ == "__main__":
    main()
