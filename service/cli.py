"""`clipserve` command line: serve | export | eval | index | bench.

`serve` flags are generated from `Settings`, so every `CLIPSERVE_*` variable has its flag.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.config import Settings


def _flag_type(annotation: Any) -> tuple[Callable[[str], Any] | None, bool]:
    """(argparse type, is_bool) for a Settings field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return None, True
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if annotation in (int, float):
        return annotation, False
    return str, False


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, is_bool = _flag_type(field.annotation)
        help_text = f"{field.description} [env CLIPSERVE_{name.upper()}]"
        if is_bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            assert kind is not None
            parser.add_argument(
                flag,
                dest=name,
                type=kind,
                metavar=name.upper(),
                default=argparse.SUPPRESS,
                help=help_text,
            )


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(**given)


def _fail(message: str) -> typing.NoReturn:
    print(f"clipserve: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def cmd_serve(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from service.serving import StartupError, serve

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        _fail(str(exc))
    try:
        serve(settings)
    except StartupError as exc:
        _fail(str(exc))


def cmd_export(args: argparse.Namespace) -> None:

    try:
        from service.export import ExportError, export_model
        from service.export.triton_config import TritonOptions
    except ImportError as exc:
        _fail(f"export needs the export extra: pip install 'clipserve[export]' ({exc})")
    triton = TritonOptions(
        max_batch_size=args.triton_max_batch_size,
        max_queue_delay_us=args.triton_queue_delay_us,
        instance_count=args.triton_instances,
        instance_kind=args.triton_instance_kind,
        tensorrt=args.triton_tensorrt,
        tensorrt_fp16=not args.triton_tensorrt_fp32,
    )
    try:
        export_model(
            args.source,
            Path(args.out),
            fp16=args.fp16,
            force=args.force,
            triton=triton,
            simplified=args.simplify,
            uint8_variant=args.uint8_variant,
            fused=args.fuse,
            quantize=args.quantize,
            eval_images=args.eval_images,
        )
    except ExportError as exc:
        _fail(str(exc))


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio

    try:
        from service.bench import BenchConfig, format_row, run_bench, write_results
    except ImportError as exc:
        _fail(f"bench needs the bench extra: pip install 'clipserve[bench]' ({exc})")

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    results = []
    for concurrency in args.concurrency:
        cfg = BenchConfig(
            url=args.url,
            model=args.model,
            modality=args.modality,
            concurrency=concurrency,
            batch=args.batch,
            duration_s=args.duration,
            requests=args.requests,
            image_size=(width, height),
            image_format=args.image_format.upper(),
            transport=args.transport,
            encoding=args.encoding,
            path=args.path,
        )
        result = asyncio.run(run_bench(cfg))
        print(format_row(result), flush=True)
        results.append(result)
    if args.out:
        write_results(results, Path(args.out))


def _client(args: argparse.Namespace) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=300)


def cmd_index(args: argparse.Namespace) -> None:

    from service.indexer import index_folder

    with _client(args) as client:
        try:
            report = index_folder(client, Path(args.dir), args.collection, args.batch)
        except (RuntimeError, OSError) as exc:
            _fail(str(exc))
    print(
        f"{report.found} images: {report.indexed} indexed, {report.skipped} already there, "
        f"{report.failed} failed"
    )


def cmd_eval(args: argparse.Namespace) -> None:

    from service.evaluate import evaluate_folder

    with _client(args) as client:
        try:
            report = evaluate_folder(client, Path(args.dir), args.model)
        except (RuntimeError, OSError) as exc:
            _fail(str(exc))
    print("\n".join(report.lines()))


def cmd_store_optimize(args: argparse.Namespace) -> None:
    import asyncio
    import time

    from service.store import StoreError, StoreUnavailable, open_store, optimize_embedded

    async def run() -> None:
        store = open_store(
            "edge", args.data_dir or Settings.model_validate({}).data_dir, None, None
        )
        await store.open()
        try:
            start = time.perf_counter()
            for name, changed in await optimize_embedded(store, args.collection or None):
                print(f"{name}: {'optimized' if changed else 'already optimal'}", flush=True)
            print(f"done in {time.perf_counter() - start:.1f} s")
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except (StoreError, StoreUnavailable) as exc:
        _fail(str(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    export = sub.add_parser("export", help="export a checkpoint into the model repository")
    export.add_argument(
        "--source", required=True, help="hf:<id|dir> or open_clip:<model>[:<tag|path>]"
    )
    export.add_argument("--out", required=True, help="<models dir>/<name>")
    export.add_argument("--fp16", action="store_true", help="half-precision towers")
    export.add_argument("--force", action="store_true", help="write even if parity fails")
    export.add_argument(
        "--simplify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold constants and shape arithmetic with onnxslim, re-checked against torch "
        "(measured: 12-25%% faster at batch 1 on CPU)",
    )
    export.add_argument(
        "--uint8-variant",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write the image tower that takes uint8 pixels and normalises in the graph",
    )
    export.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fused attention, layer-norm, GELU and bias nodes (onnxruntime contrib operators), "
        "kept only where they match torch; the manifest records what was fused",
    )
    export.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write int8 towers for CPUs (served with --precision int8), gated on "
        "--eval-images: median cosine >= 0.99 and zero-shot top-1 within one point",
    )
    export.add_argument(
        "--eval-images",
        type=Path,
        help="held-out labelled images for the int8 gate: one sub-folder per class",
    )
    triton = export.add_argument_group("Triton config.pbtxt (how Triton serves the towers)")
    triton.add_argument("--triton-max-batch-size", type=int, default=256)
    triton.add_argument("--triton-queue-delay-us", type=int, default=2000)
    triton.add_argument("--triton-instances", type=int, default=1)
    triton.add_argument(
        "--triton-instance-kind", default="KIND_AUTO", choices=["KIND_AUTO", "KIND_GPU", "KIND_CPU"]
    )
    triton.add_argument(
        "--triton-tensorrt", action="store_true", help="TensorRT accelerator in the ORT backend"
    )
    triton.add_argument("--triton-tensorrt-fp32", action="store_true", help="TensorRT in FP32")
    export.set_defaults(func=cmd_export)

    index = sub.add_parser("index", help="bulk-index a folder of images into a collection")
    index.add_argument("dir")
    index.add_argument("--collection", required=True)
    index.add_argument("--url", default="http://127.0.0.1:8000")
    index.add_argument("--api-key", default=None)
    index.add_argument("--batch", type=int, default=32, help="images per request")
    index.set_defaults(func=cmd_index)

    evaluate = sub.add_parser("eval", help="zero-shot and retrieval metrics on an ImageFolder")
    evaluate.add_argument("dir", help="one folder per class; the folder name is the label")
    evaluate.add_argument("--url", default="http://127.0.0.1:8000")
    evaluate.add_argument("--api-key", default=None)
    evaluate.add_argument("--model", default=None)
    evaluate.set_defaults(func=cmd_eval)

    optimize = sub.add_parser(
        "store-optimize",
        help="build HNSW indexes and vacuum the embedded store (with the server stopped)",
    )
    optimize.add_argument("--data-dir", default=None, help="default: CLIPSERVE_DATA_DIR or data")
    optimize.add_argument("--collection", action="append", help="default: every collection")
    optimize.set_defaults(func=cmd_store_optimize)

    bench = sub.add_parser("bench", help="load-test a running server")
    bench.add_argument("--url", default="http://127.0.0.1:8000")
    bench.add_argument("--model", default=None)
    bench.add_argument("--modality", choices=["text", "image", "mixed"], default="text")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    bench.add_argument("--batch", type=int, default=1, help="items per request")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    bench.add_argument("--requests", type=int, default=0, help="stop after N requests instead")
    bench.add_argument("--image-size", default="600x400", help="WIDTHxHEIGHT of test images")
    bench.add_argument("--image-format", default="jpeg", choices=["jpeg", "png", "webp"])
    bench.add_argument("--transport", choices=["json", "multipart"], default="json")
    bench.add_argument("--encoding", choices=["float", "base64"], default="base64")
    bench.add_argument("--path", default="/v1/embeddings", help="embeddings route (peers)")
    bench.add_argument("--out", default=None, help="write results as JSON here")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
