"""`clipserve` command line: serve | export | eval | index | bench.

`serve` flags are generated from `Settings`, so every `CLIPSERVE_*` variable has its flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from service.config import Settings

T = TypeVar("T")


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


def _default_text(field: Any) -> str:
    """A setting's default as a user would type it (lists comma-separated)."""
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, is_bool = _flag_type(field.annotation)
        help_text = (
            f"{field.description} (default: {_default_text(field)}) [env CLIPSERVE_{name.upper()}]"
        ).replace("%", "%%")
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
    from pydantic import ValidationError

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    try:
        return Settings(**given)
    except ValidationError as exc:  # one line: "--port (CLIPSERVE_PORT): ..."
        problems = [
            f"--{str(e['loc'][0]).replace('_', '-')} (CLIPSERVE_{str(e['loc'][0]).upper()}): "
            f"{e['msg']}, got {e.get('input')!r}"
            for e in exc.errors()
        ]
        _fail("; ".join(problems))


class CliError(Exception):
    """A failure the user can fix: printed as one line, exit code 2."""


def _fail(message: str) -> typing.NoReturn:
    raise CliError(message)


def _unreachable(url: str) -> str:
    return (
        f"cannot reach a clipserve server at {url}: start one with `clipserve serve`, "
        "or point --url at it"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from service.serving import StartupError, serve

    settings = settings_from_args(args)
    try:
        serve(settings, debug=args.debug)
    except StartupError as exc:
        raise CliError(str(exc)) from exc


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
            tokenizer_dir=Path(args.tokenizer) if args.tokenizer else None,
            text_attention_mask=args.text_attention_mask,
            fused=args.fuse,
            quantize=args.quantize,
            eval_images=args.eval_images,
        )
    except ExportError as exc:
        raise CliError(str(exc)) from exc


def _plots() -> Any:
    """The plots module, or one line saying which extra brings matplotlib."""
    try:
        from service import plots
    except ImportError as exc:
        _fail(f"pictures need the plots extra: pip install 'clipserve[plots]' ({exc})")
    return plots


def _read_results(names: list[str]) -> list[tuple[str, Any]]:
    """(file name, results) of `clipserve bench --out` files."""
    import json

    runs = []
    for name in names:
        path = Path(name)
        try:
            runs.append((path.stem, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            _fail(f"cannot read bench results {path}: {exc}")
    return runs


def _draw_bench(plot: str, runs: list[tuple[str, Any]]) -> None:

    try:
        print(f"plot: {_plots().bench_plot(runs, Path(plot))}")
    except (KeyError, TypeError, AttributeError) as exc:
        _fail(f"not the results of `clipserve bench --out` ({type(exc).__name__}: {exc})")


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio
    from dataclasses import asdict

    if args.results is not None and not args.plot:
        _fail("--results draws earlier results: give --plot FILE too")
    if args.plot:
        _plots()  # before a run, not after it
    if args.results is not None:  # draw only: no load, no server
        _draw_bench(args.plot, _read_results(args.results))
        return
    try:
        from service.bench import BenchConfig, format_row, run_bench, write_results
    except ImportError as exc:
        _fail(f"bench needs the bench extra: pip install 'clipserve[bench]' ({exc})")

    width, height = args.image_size
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
        try:
            result = asyncio.run(run_bench(cfg))
        except OSError as exc:  # aiohttp's connection errors are OSErrors
            raise CliError(_unreachable(args.url)) from exc
        print(format_row(result), flush=True)
        results.append(result)
    if args.out:
        write_results(results, Path(args.out))
    if args.plot:  # labelled by --out's file name, else by what was measured
        label = Path(args.out).stem if args.out else f"{args.modality} b={args.batch}"
        _draw_bench(args.plot, [(label, [asdict(r) for r in results])])


def _client(args: argparse.Namespace) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=300)


def _against_server(args: argparse.Namespace, work: Callable[[Any], T]) -> T:
    """Run `work(client)`; an unreachable server or a refused request is one line."""
    import httpx

    with _client(args) as client:
        try:
            return work(client)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CliError(_unreachable(args.url)) from exc
        except (RuntimeError, OSError) as exc:
            raise CliError(str(exc)) from exc


def cmd_index(args: argparse.Namespace) -> None:

    from service.indexer import index_folder

    report = _against_server(
        args, lambda client: index_folder(client, Path(args.dir), args.collection, args.batch)
    )
    print(
        f"{report.found} images: {report.indexed} indexed, {report.skipped} already there, "
        f"{report.failed} failed"
    )


def cmd_eval(args: argparse.Namespace) -> None:

    from service.evaluate import evaluate_folder

    if args.report:
        _plots()  # before the evaluation, not after it
    report = _against_server(
        args, lambda client: evaluate_folder(client, Path(args.dir), args.model)
    )
    print("\n".join(report.lines()))
    if args.report:
        from service.eval_report import write_report

        for path in write_report(report, Path(args.dir), Path(args.report)):
            print(f"report: {path}")


def cmd_store_optimize(args: argparse.Namespace) -> None:
    import asyncio
    import time

    from service.store.facade import optimize_embedded
    from service.store.factory import open_store
    from service.store.types import StoreError, StoreUnavailable

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
        raise CliError(str(exc)) from exc


def _server_flags(parser: argparse.ArgumentParser, api_key: bool = True) -> None:
    """The server a client command talks to: flags, or CLIPSERVE_URL / CLIPSERVE_API_KEY."""
    url = os.environ.get("CLIPSERVE_URL", "http://127.0.0.1:8000")
    parser.add_argument(
        "--url", default=url, help=f"the server (default: {url}) [env CLIPSERVE_URL]"
    )
    if api_key:
        key = os.environ.get("CLIPSERVE_API_KEY")
        parser.add_argument("--api-key", default=key, help="Bearer key [env CLIPSERVE_API_KEY]")


def _image_size(value: str) -> tuple[int, int]:
    width, sep, height = value.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r} is not WIDTHxHEIGHT, e.g. 600x400")
    return int(width), int(height)


def cmd_store_check(args: argparse.Namespace) -> None:
    import asyncio

    from service.store.repair import Actions, store_check
    from service.store.types import StoreError, StoreUnavailable

    defaults = Settings.model_validate({})
    actions = Actions(args.drop or [], args.reset or [], args.rebuild or [])
    try:
        lines, whole = asyncio.run(
            store_check(args.engine, args.data_dir or defaults.data_dir, actions)
        )
    except (StoreError, StoreUnavailable) as exc:
        raise CliError(str(exc)) from exc
    print("\n".join(lines))
    if not whole:
        print("damaged collections remain: --drop, --reset or --rebuild them", file=sys.stderr)
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipserve", description=__doc__)
    debug = "show the full traceback of a failure (otherwise one line: cause and fix)"
    parser.add_argument("--debug", action="store_true", help=debug)
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command works too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    serve = add(
        "serve",
        help="serve the HTTP API",
        description="Serve the HTTP API. Every flag is also a CLIPSERVE_* environment variable "
        "(flags win).",
    )
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    export = add("export", help="export a checkpoint into the model repository")
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
        "--tokenizer",
        metavar="DIR",
        help="local folder with the Hugging Face tokenizer an open_clip config names "
        "(hf_tokenizer_name), standing in for the hub",
    )
    export.add_argument(
        "--text-attention-mask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give the text tower an attention_mask input and match the call that passes it "
        "(default: the call the family was trained with: none for CLIP and SigLIP)",
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

    index = add("index", help="bulk-index a folder of images into a collection")
    index.add_argument("dir")
    index.add_argument("--collection", required=True)
    _server_flags(index)
    index.add_argument("--batch", type=int, default=32, help="images per request")
    index.set_defaults(func=cmd_index)

    evaluate = add("eval", help="zero-shot and retrieval metrics on an ImageFolder")
    evaluate.add_argument("dir", help="one folder per class; the folder name is the label")
    _server_flags(evaluate)
    evaluate.add_argument("--model", default=None)
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="write eval.json, a confusion matrix, per-class accuracy and a retrieval strip "
        "(PNGs; the plots extra) into DIR",
    )
    evaluate.set_defaults(func=cmd_eval)

    optimize = add(
        "store-optimize",
        help="build HNSW indexes and vacuum the embedded store (with the server stopped)",
    )
    optimize.add_argument("--data-dir", default=None, help="default: CLIPSERVE_DATA_DIR or data")
    optimize.add_argument("--collection", action="append", help="default: every collection")
    optimize.set_defaults(func=cmd_store_optimize)

    check = add(
        "store-check",
        help="check the embedded store and repair damaged collections (with the server stopped)",
    )
    check.add_argument("--data-dir", default=None, help="default: CLIPSERVE_DATA_DIR or data")
    check.add_argument("--engine", choices=["edge", "local"], default="edge")
    check.add_argument("--drop", action="append", metavar="NAME", help="delete the collection")
    check.add_argument(
        "--reset", action="append", metavar="NAME", help="empty it, keeping model and options"
    )
    check.add_argument(
        "--rebuild",
        action="append",
        metavar="NAME",
        help="keep every point that still reads back, in a fresh shard",
    )
    check.set_defaults(func=cmd_store_check)

    bench = add("bench", help="load-test a running server")
    _server_flags(bench, api_key=False)
    bench.add_argument("--model", default=None)
    bench.add_argument("--modality", choices=["text", "image", "mixed"], default="text")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    bench.add_argument("--batch", type=int, default=1, help="items per request")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    bench.add_argument("--requests", type=int, default=0, help="stop after N requests instead")
    bench.add_argument(
        "--image-size", type=_image_size, default=(600, 400), help="WIDTHxHEIGHT of test images"
    )
    bench.add_argument("--image-format", default="jpeg", choices=["jpeg", "png", "webp"])
    bench.add_argument("--transport", choices=["json", "multipart"], default="json")
    bench.add_argument("--encoding", choices=["float", "base64"], default="base64")
    bench.add_argument("--path", default="/v1/embeddings", help="embeddings route (peers)")
    bench.add_argument("--out", default=None, help="write results as JSON here")
    bench.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="draw throughput and p50/p99 latency against concurrency as a PNG (the plots extra)",
    )
    bench.add_argument(
        "--results",
        metavar="JSON",
        nargs="+",
        default=None,
        help="earlier --out files to draw on the --plot picture instead of running (compare "
        "runs, settings or peers)",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Every failure a user can cause ends in one line on stderr and a non-zero exit code;
    `--debug` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("clipserve: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, CliError):
            message, code = " ".join(str(exc).split()), 2
        else:
            message, code = f"{_one_line(exc)} (run with --debug for the traceback)", 1
        print(f"clipserve: error: {message}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
