"""Remote runner: the towers run in an NVIDIA Triton Inference Server, reached with `tritonclient`.

The API, preprocessing and batching stay in clipserve; only `runner.run(feeds)` crosses the network
(HTTP or gRPC, binary tensors). Outputs are L2-normalised here, exactly as the in-process runner
does, so both runtimes return the same vectors.

Model names. A clipserve model folder is itself a Triton model repository: its towers `image/` and
`text/` hold `config.pbtxt` and `1/model.onnx`, so `tritonserver --model-repository=models/<name>`
serves them as the Triton models `image` and `text`. `triton_model_name` is a template over
`{model}` (the clipserve model, i.e. its folder name) and `{tower}` (the tower's folder): the
default `{tower}` fits that one-repository-per-model layout; `{model}.{tower}` fits one Triton
serving several clipserve models from a repository of renamed tower folders (see docs/triton.md).

Failures. Connection errors, timeouts and gRPC UNAVAILABLE are transient: retried a bounded number
of times with backoff, on a fresh connection. Whatever still fails becomes a `RunnerError` naming
the server and model, which the API answers with 503. Readiness (`/readyz`, check `triton`) asks
Triton whether the server and every model clipserve uses are ready.

Threads. `run` is called from the batcher's worker threads; each thread keeps its own client (one
pooled connection, or one gRPC channel), so nothing in tritonclient is shared across threads.

Shared memory (`triton_shm`, Triton on the same host sharing /dev/shm): inputs of at least
`triton_shm_min_bytes` are written into a POSIX shared-memory region per worker thread, registered
with Triton once, instead of being sent over the socket. For a batch of 64 images at 224 px
(38.5 MB) this took a request from ~400 ms to ~37 ms on loopback here (docs/triton.md). Regions
are re-registered when Triton restarts and unregistered and unlinked at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from service.config import Settings
from service.manifest import Manifest, Tower, TowerSpec
from service.registry import RunnerFactory
from service.runners.base import (
    RunnerError,
    TowerRunner,
    l2_normalize,
    select_feeds,
    serving_spec,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# manifest dtype -> Triton datatype (KServe v2 names)
TRITON_DTYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "uint8": "UINT8",
}
# Triton statuses worth another try: the server is restarting, overloaded or slow.
_TRANSIENT_STATUSES = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "502",
    "503",
    "504",
}


class TritonUnreachable(RunnerError):
    """No answer from the server (down, restarting, network): retried, then a 503."""


class _ShmLost(Exception):
    """Triton no longer knows our shared-memory region (it restarted): register it again."""


@dataclass(frozen=True)
class TritonOptions:
    url: str = "localhost:8001"
    protocol: Literal["grpc", "http"] = "grpc"
    model_name: str = "{tower}"
    model_version: str = ""
    timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    retries: int = 2
    retry_backoff_s: float = 0.1
    startup_wait_s: float = 30.0
    shm: bool = False
    shm_min_bytes: int = 1 << 20

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonOptions:
        return cls(
            url=settings.triton_url,
            protocol=settings.triton_protocol,
            model_name=settings.triton_model_name,
            model_version=settings.triton_model_version,
            timeout_s=settings.triton_timeout_s,
            connect_timeout_s=settings.triton_connect_timeout_s,
            retries=settings.triton_retries,
            retry_backoff_s=settings.triton_retry_backoff_s,
            startup_wait_s=settings.triton_startup_wait_s,
            shm=settings.triton_shm,
            shm_min_bytes=settings.triton_shm_min_bytes,
        )

    def triton_name(self, model: str, tower_dir: str) -> str:
        try:
            return self.model_name.format(model=model, tower=tower_dir)
        except (KeyError, IndexError, ValueError) as exc:
            raise RunnerError(
                f"bad triton_model_name {self.model_name!r}: only {{model}} and {{tower}} "
                f"may be used ({exc!r})"
            ) from None


def split_url(url: str, protocol: str) -> tuple[str, bool]:
    """`host:port` and whether TLS is wanted; a scheme (http, https, grpc, grpcs) is accepted."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rstrip("/"), False
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise RunnerError(f"triton_url {url!r}: unknown scheme {scheme!r}")
    if protocol == "grpc" and scheme in ("http", "https"):
        log.warning("triton_url %s has an HTTP scheme but triton_protocol is grpc", url)
    return rest.rstrip("/"), scheme in ("https", "grpcs")


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RunnerError(
            f"the triton runtime needs tritonclient: pip install 'clipserve[triton]' ({exc})"
        ) from exc


def is_transient(exc: BaseException) -> bool:
    """Worth a retry on a fresh connection: the server did not answer, or asked us to come back."""
    if isinstance(exc, (OSError, _ShmLost)):  # refused, reset, broken pipe, timeout, DNS
        return True
    if type(exc).__module__.startswith("gevent") and "Timeout" in type(exc).__name__:
        return True
    status = getattr(exc, "status", None)
    if callable(status):
        return str(status()) in _TRANSIENT_STATUSES
    return False


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return text or type(exc).__name__


# input name -> (shared-memory region name, offset, byte size)
Placement = dict[str, tuple[str, int, int]]


class _Client(Protocol):
    def server_ready(self) -> bool: ...
    def model_ready(self, name: str, version: str) -> bool: ...
    def model_config(self, name: str, version: str) -> dict[str, Any]: ...
    def model_metadata(self, name: str, version: str) -> dict[str, Any]: ...
    def infer(
        self,
        name: str,
        version: str,
        feeds: dict[str, np.ndarray],
        output: str,
        placement: Placement | None = None,
    ) -> np.ndarray: ...
    def register_shm(self, name: str, key: str, size: int) -> None: ...
    def unregister_shm(self, name: str) -> None: ...
    def close(self) -> None: ...


class _BaseClient:
    _mod: Any
    _c: Any
    _binary: dict[str, bool]  # HTTP: binary tensors, not JSON

    def _inputs(self, feeds: dict[str, np.ndarray], placement: Placement | None) -> list[Any]:
        inputs = []
        for key, arr in feeds.items():
            inp = self._mod.InferInput(key, list(arr.shape), TRITON_DTYPES[str(arr.dtype)])
            if placement and key in placement:
                region, offset, size = placement[key]
                inp.set_shared_memory(region, size, offset=offset)
            else:
                inp.set_data_from_numpy(arr, **self._binary)
            inputs.append(inp)
        return inputs

    def close(self) -> None:
        self._c.close()


class _HttpClient(_BaseClient):
    def __init__(self, host: str, ssl: bool, opts: TritonOptions) -> None:
        self._mod = _import("tritonclient.http")
        self._binary = {"binary_data": True}
        self._c = self._mod.InferenceServerClient(
            host,
            concurrency=1,
            connection_timeout=opts.connect_timeout_s,
            network_timeout=opts.timeout_s,
            ssl=ssl,
        )

    def server_ready(self) -> bool:
        return bool(self._c.is_server_ready())

    def model_ready(self, name: str, version: str) -> bool:
        return bool(self._c.is_model_ready(name, version))

    def model_config(self, name: str, version: str) -> dict[str, Any]:
        return dict(self._c.get_model_config(name, version))

    def model_metadata(self, name: str, version: str) -> dict[str, Any]:
        return dict(self._c.get_model_metadata(name, version))

    def infer(
        self,
        name: str,
        version: str,
        feeds: dict[str, np.ndarray],
        output: str,
        placement: Placement | None = None,
    ) -> np.ndarray:
        outputs = [self._mod.InferRequestedOutput(output, binary_data=True)]
        inputs = self._inputs(feeds, placement)
        result = self._c.infer(name, inputs, model_version=version, outputs=outputs)
        return np.asarray(result.as_numpy(output))

    def register_shm(self, name: str, key: str, size: int) -> None:
        self._c.register_system_shared_memory(name, key, size)

    def unregister_shm(self, name: str) -> None:
        self._c.unregister_system_shared_memory(name)


class _GrpcClient(_BaseClient):
    def __init__(self, host: str, ssl: bool, opts: TritonOptions) -> None:
        self._mod = _import("tritonclient.grpc")
        self._binary = {}
        self._c = self._mod.InferenceServerClient(host, ssl=ssl)
        self._timeout = opts.timeout_s
        self._probe_timeout = opts.connect_timeout_s

    def server_ready(self) -> bool:
        return bool(self._c.is_server_ready(client_timeout=self._probe_timeout))

    def model_ready(self, name: str, version: str) -> bool:
        return bool(self._c.is_model_ready(name, version, client_timeout=self._probe_timeout))

    def model_config(self, name: str, version: str) -> dict[str, Any]:
        reply = self._c.get_model_config(name, version, as_json=True, client_timeout=self._timeout)
        return dict(reply.get("config", {}))

    def model_metadata(self, name: str, version: str) -> dict[str, Any]:
        return dict(
            self._c.get_model_metadata(name, version, as_json=True, client_timeout=self._timeout)
        )

    def infer(
        self,
        name: str,
        version: str,
        feeds: dict[str, np.ndarray],
        output: str,
        placement: Placement | None = None,
    ) -> np.ndarray:
        outputs = [self._mod.InferRequestedOutput(output)]
        inputs = self._inputs(feeds, placement)
        result = self._c.infer(
            name, inputs, model_version=version, outputs=outputs, client_timeout=self._timeout
        )
        return np.asarray(result.as_numpy(output))

    def register_shm(self, name: str, key: str, size: int) -> None:
        self._c.register_system_shared_memory(name, key, size, client_timeout=self._timeout)

    def unregister_shm(self, name: str) -> None:
        self._c.unregister_system_shared_memory(name, client_timeout=self._timeout)


@dataclass
class _Region:
    """A POSIX shared-memory segment of ours, and the client generation it is registered with."""

    name: str
    size: int
    handle: Any
    registered: int = -1  # generation of the thread's client; -1: not registered

    @property
    def key(self) -> str:
        return "/" + self.name


_region_ids = itertools.count()


class TritonConnection:
    """One Triton server: per-thread clients, bounded retries, readiness of the models in use."""

    def __init__(self, opts: TritonOptions) -> None:
        self.opts = opts
        self.host, self.ssl = split_url(opts.url, opts.protocol)
        self.where = f"Triton at {self.host} ({opts.protocol})"
        self.models: list[str] = []  # Triton model names clipserve uses, for readiness
        self._local = threading.local()  # inference clients, one per batcher thread
        self._probe_local = threading.local()  # readiness clients, short timeouts
        self._client_class: type[_HttpClient] | type[_GrpcClient] = (
            _GrpcClient if opts.protocol == "grpc" else _HttpClient
        )
        # fail now, not on the first request, when tritonclient is missing
        _import(f"tritonclient.{opts.protocol}")
        self._shm: Any = _import("tritonclient.utils.shared_memory") if opts.shm else None
        self._regions: list[_Region] = []  # every thread's, for the clean-up at exit
        self._regions_lock = threading.Lock()
        self._shm_checked = False
        if opts.shm:
            atexit.register(self.close_shm)

    def _client(self, probe: bool) -> _Client:
        local = self._probe_local if probe else self._local
        client: _Client | None = getattr(local, "client", None)
        if client is None:
            # probes (readiness, start-up) get short timeouts so /readyz answers quickly
            opts = replace(self.opts, timeout_s=self.opts.connect_timeout_s) if probe else self.opts
            client = self._client_class(self.host, self.ssl, opts)
            local.client = client
            local.generation = getattr(local, "generation", 0) + 1
        return client

    def _drop_client(self, probe: bool) -> None:
        local = self._probe_local if probe else self._local
        client = getattr(local, "client", None)
        local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                log.debug("closing a Triton client failed", exc_info=True)

    def call(self, what: str, fn: Callable[[_Client], T], probe: bool = False) -> T:
        """`fn(client)`, retried on transient errors on a fresh client while the time budget
        (one timeout) lasts; probes are tried once. Anything else: a RunnerError at once."""
        attempts = 1 if probe else 1 + self.opts.retries
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                return fn(self._client(probe))
            except Exception as exc:
                if not is_transient(exc):
                    raise RunnerError(f"{self.where}: {what} failed: {_message(exc)}") from exc
                self._drop_client(probe)
                delay = self.opts.retry_backoff_s * 2 ** (attempt - 1)
                spent = time.monotonic() - started
                if attempt == attempts or spent + delay >= self.opts.timeout_s:
                    raise TritonUnreachable(
                        f"{self.where} is unreachable or unavailable: {what} failed "
                        f"({attempt} attempt(s) in {spent:.1f}s): {_message(exc)}"
                    ) from exc
                log.info("%s: %s: %s; retrying in %.2fs", self.where, what, _message(exc), delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_for_model(self, name: str) -> None:
        """Block until the server answers and `name` is ready, up to `startup_wait_s`."""
        deadline = time.monotonic() + self.opts.startup_wait_s
        last = "no answer"
        while True:
            try:
                if self.call("server readiness", lambda c: c.server_ready(), probe=True):
                    if self.model_ready(name):
                        return
                    last = f"model {name!r} is not ready (is it in Triton's model repository?)"
                else:
                    last = "server is not ready"
            except RunnerError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise RunnerError(
                    f"{self.where}: gave up after {self.opts.startup_wait_s:g}s waiting for "
                    f"model {name!r}: {last}"
                )
            time.sleep(0.25)

    def model_ready(self, name: str) -> bool:
        version = self.opts.model_version
        what = f"model {name!r} readiness"
        return self.call(what, lambda c: c.model_ready(name, version), probe=True)

    def ready_sync(self) -> bool:
        try:
            if not self.call("server readiness", lambda c: c.server_ready(), probe=True):
                return False
            return all(self.model_ready(m) for m in self.models)
        except RunnerError as exc:
            log.debug("Triton not ready: %s", exc)
            return False

    async def ready(self) -> bool:
        """For /readyz: the server is ready and so is every model clipserve uses."""
        return await asyncio.to_thread(self.ready_sync)

    def infer(self, name: str, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        version = self.opts.model_version
        nbytes = sum(a.nbytes for a in feeds.values())
        use_shm = self._shm is not None and nbytes >= self.opts.shm_min_bytes

        def attempt(client: _Client) -> np.ndarray:
            if not use_shm:
                return client.infer(name, version, feeds, output)
            region = self._region(client, nbytes)
            placement: Placement = {}
            offset = 0
            for key, arr in feeds.items():
                placement[key] = (region.name, offset, arr.nbytes)
                offset += arr.nbytes
            self._shm.set_shared_memory_region(region.handle, list(feeds.values()))
            try:
                return client.infer(name, version, feeds, output, placement)
            except Exception as exc:
                if "shared memory" in _message(exc).lower():
                    region.registered = -1
                    raise _ShmLost(_message(exc)) from exc
                raise

        return self.call(f"inference on model {name!r}", attempt)

    def _region(self, client: _Client, nbytes: int) -> _Region:
        """This thread's region, big enough for `nbytes` and registered with the server."""
        region: _Region | None = getattr(self._local, "region", None)
        if region is not None and region.size < nbytes:
            self._destroy(region, client)
            region = None
        if region is None:
            size = max(nbytes, 2 * self.opts.shm_min_bytes)
            name = f"clipserve-{os.getpid()}-{next(_region_ids)}"
            handle = self._shm.create_shared_memory_region(name, "/" + name, size)
            region = _Region(name, size, handle)
            with self._regions_lock:
                self._regions.append(region)
            self._local.region = region
        generation = self._local.generation
        if region.registered != generation:
            try:  # a restarted server forgot it, a live one may still hold it
                client.unregister_shm(region.name)
            except Exception:
                log.debug("unregistering %s failed", region.name, exc_info=True)
            try:
                client.register_shm(region.name, region.key, region.size)
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise RunnerError(
                    f"{self.where}: cannot register shared memory {region.key} "
                    f"({_message(exc)}); triton_shm needs Triton on this host, sharing /dev/shm"
                ) from exc
            region.registered = generation
        return region

    def _destroy(self, region: _Region, client: _Client | None) -> None:
        if client is not None and region.registered != -1:
            try:
                client.unregister_shm(region.name)
            except Exception:
                log.debug("unregistering %s failed", region.name, exc_info=True)
        try:
            self._shm.destroy_shared_memory_region(region.handle)
        except Exception:
            log.debug("destroying %s failed", region.key, exc_info=True)
        with self._regions_lock:
            if region in self._regions:
                self._regions.remove(region)

    def close_shm(self) -> None:
        """Unregister and unlink every region (at exit): nothing is left in /dev/shm."""
        with self._regions_lock:
            regions = list(self._regions)
        if not regions:
            return
        try:
            client: _Client | None = self._client_class(
                self.host, self.ssl, replace(self.opts, timeout_s=self.opts.connect_timeout_s)
            )
        except Exception:
            client = None
        for region in regions:
            self._destroy(region, client)
        if client is not None:
            client.close()

    def check_shm(self) -> None:
        """At start-up, once: the server can map a region of ours (it runs on this host)."""
        if self._shm is None or self._shm_checked:
            return

        def probe(client: _Client) -> None:
            region = self._region(client, 1)
            self._destroy(region, client)
            self._local.region = None

        self.call("shared memory registration", probe)
        self._shm_checked = True


def _check_metadata(where: str, name: str, spec: TowerSpec, meta: dict[str, Any], dim: int) -> None:
    """The Triton model takes the manifest's inputs and gives its output (names, types, shapes)."""
    declared = {i.name: i for i in spec.inputs}
    served = {str(t["name"]): t for t in meta.get("inputs", [])}
    if set(served) != set(declared):
        raise RunnerError(
            f"{where}: model {name!r} takes inputs {sorted(served)}, the manifest's tower takes "
            f"{sorted(declared)}: is triton_model_name pointing at the right model?"
        )
    for key, t in served.items():
        want = TRITON_DTYPES[declared[key].dtype]
        if t.get("datatype") != want:
            raise RunnerError(
                f"{where}: model {name!r} input {key!r} is {t.get('datatype')}, "
                f"the manifest says {want}"
            )
        # a batching model reports the batch axis as -1, as the manifest does
        got = [int(d) for d in t.get("shape", [])]
        expected = declared[key].shape
        if len(got) == len(expected) and any(
            g != e and -1 not in (g, e) for g, e in zip(got[1:], expected[1:], strict=True)
        ):
            raise RunnerError(
                f"{where}: model {name!r} input {key!r} has shape {got}, "
                f"the manifest says {expected}"
            )
    outputs = {str(t["name"]): t for t in meta.get("outputs", [])}
    if spec.output.name not in outputs:
        raise RunnerError(
            f"{where}: model {name!r} has no output {spec.output.name!r} (it has {sorted(outputs)})"
        )
    out_shape = [int(d) for d in outputs[spec.output.name].get("shape", [])]
    if out_shape and out_shape[-1] not in (-1, dim):
        raise RunnerError(
            f"{where}: model {name!r} output {spec.output.name!r} has shape {out_shape}, "
            f"the manifest says dimension {dim}"
        )


class TritonTowerRunner:
    runtime = "triton"

    def __init__(
        self, conn: TritonConnection, name: str, spec: TowerSpec, manifest: Manifest
    ) -> None:
        self.conn, self.name, self.spec, self.dim = conn, name, spec, manifest.embedding_dim
        version = conn.opts.model_version
        conn.wait_for_model(name)
        meta = conn.call(f"metadata of {name!r}", lambda c: c.model_metadata(name, version))
        _check_metadata(conn.where, name, spec, meta, self.dim)
        config = conn.call(f"config of {name!r}", lambda c: c.model_config(name, version))
        # Triton refuses batches above the model's max_batch_size: larger ones are split here
        self.max_batch = int(config.get("max_batch_size", 0)) or None
        backend = config.get("backend") or config.get("platform") or "?"
        kinds = sorted({str(g.get("kind", "?")) for g in config.get("instance_group", [])})
        self.provider = f"triton:{backend}:{'+'.join(kinds) or '?'}"
        conn.models.append(name)
        conn.check_shm()

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        return {"triton": self.conn.ready}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = select_feeds(self.spec, feeds)
        n = next(iter(inputs.values())).shape[0]
        step = self.max_batch or n
        parts = []
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in inputs.items()}
            parts.append(self.conn.infer(self.name, chunk, self.spec.output.name))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.ndim != 2 or out.shape != (n, self.dim):
            raise RunnerError(
                f"{self.conn.where}: model {self.name!r} returned shape {out.shape}, "
                f"expected ({n}, {self.dim})"
            )
        return l2_normalize(out)


def triton_runner_factory(settings: Settings) -> RunnerFactory:
    conn = TritonConnection(TritonOptions.from_settings(settings))
    owners: dict[str, str] = {}  # Triton model name -> the clipserve model using it

    def make(model_dir: Path, manifest: Manifest, tower: Tower) -> TowerRunner:
        spec = serving_spec(model_dir, manifest, tower, settings.image_input, settings.precision)
        name = conn.opts.triton_name(model_dir.name, Path(spec.path).name)
        owner = owners.setdefault(name, model_dir.name)
        if owner != model_dir.name:  # two models would silently share one Triton model
            raise RunnerError(
                f"clipserve models {owner!r} and {model_dir.name!r} both map to the Triton model "
                f"{name!r} (triton_model_name {conn.opts.model_name!r}): load only the model "
                "this Triton serves (CLIPSERVE_MODELS) or use {model} in triton_model_name"
            )
        runner = TritonTowerRunner(conn, name, spec, manifest)
        log.info("%s tower of %s -> %s model %r", tower, model_dir.name, conn.where, name)
        return runner

    return make
