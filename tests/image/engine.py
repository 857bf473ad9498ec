"""Build the Dockerfile's images with Buildah and run them with Podman, as this machine allows.

No container registry is reachable and no Docker daemon runs, so:
- the base image (python:3.11-slim's stand-in) is a Debian rootfs made by `mmdebstrap` from the
  host's apt sources and imported with `podman import`, once: it is cached under ROOT, keyed by
  what goes into it, and passed to the build as BASE_IMAGE;
- Buildah builds with chroot isolation (no user namespaces here), never pulling, and in Docker
  format (OCI images have no HEALTHCHECK);
- Podman runs with runc and cgroupfs (crun and systemd cgroups fail here), host networking and
  explicit ulimits (runc may not raise them past the sandbox's).
Everything lives in a storage of its own under ROOT, apart from any other Podman user, with the
kernel's overlay driver (CLIPSERVE_IMAGE_TEST_STORAGE_DRIVER=vfs where overlay mounts are not
allowed: every layer and container is then a full copy, several times slower).
The tools come from `.ci/install-image-tools.sh`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(os.environ.get("CLIPSERVE_IMAGE_TEST_ROOT", "/var/tmp/clipserve-image-test"))
DRIVER = os.environ.get("CLIPSERVE_IMAGE_TEST_STORAGE_DRIVER", "overlay")
# One storage per driver: containers/storage refuses to open a storage made by another.
STORAGE = ["--root", str(ROOT / f"storage-{DRIVER}"), "--runroot", str(ROOT / f"run-{DRIVER}")]
STORAGE += ["--storage-driver", DRIVER]
PODMAN = ["podman", *STORAGE, "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
BUILDAH = ["buildah", *STORAGE]
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
INSTALL_HINT = "run `bash .ci/install-image-tools.sh` (make test does)"

# Debian 12 has Python 3.11, the CPU image's PYTHON_VERSION; the host's CA bundle lets pip in
# the build trust this network's TLS.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def require_tools() -> None:
    missing = [t for t in ("buildah", "podman", "runc", "mmdebstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)


def sh(cmd: list[str], *, timeout: float = 120, check: bool = True) -> str:
    """Run a command; its output, or a failure that shows it."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-4000:]}"
            f"{result.stderr[-4000:]}"
        )
    return result.stdout


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise with other test runs on this machine that share ROOT."""
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _apt_sources() -> Path:
    for path in HOST_APT_SOURCES:
        if path.is_file() and path.read_text().strip():
            return path
    raise AssertionError(f"no apt sources on this host ({', '.join(map(str, HOST_APT_SOURCES))})")


def base_image() -> tuple[str, float]:
    """(tag, seconds spent making it: 0 when cached) of the Debian base image."""
    sources = _apt_sources()
    recipe = [BASE_SUITE, *BASE_PACKAGES, *BASE_EXCLUDES, sources.read_text()]
    digest = hashlib.sha256("\n".join(recipe).encode() + HOST_CA_BUNDLE.read_bytes())
    tag = f"localhost/clipserve-test-base:{BASE_SUITE}-{digest.hexdigest()[:12]}"
    with _locked("base"):
        exists = subprocess.run([*PODMAN, "image", "exists", tag], check=False)
        if exists.returncode == 0:
            return tag, 0.0
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
            tarball = Path(tmp) / "rootfs.tar"
            cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
            cmd += [f"--dpkgopt=path-exclude={p}" for p in BASE_EXCLUDES]
            cmd += [f"--customize-hook=copy-in {HOST_CA_BUNDLE} {HOST_CA_BUNDLE.parent}"]
            cmd += [BASE_SUITE, str(tarball), str(sources)]
            sh(cmd, timeout=1200)
            sh([*PODMAN, "import", "--change", 'CMD ["python3"]', str(tarball), tag])
        return tag, time.monotonic() - started


def build(context: Path, tag: str, target: str, log: Path, *build_args: str) -> float:
    """Seconds to build `target` of context/Dockerfile as `tag`; the log goes to `log`."""
    cmd = [*BUILDAH, "bud", "--isolation", "chroot", "--pull-never", "--format", "docker"]
    cmd += ["--target", target, "--tag", tag]
    for arg in build_args:
        cmd += ["--build-arg", arg]
    started = time.monotonic()
    with log.open("w") as sink:
        result = subprocess.run(
            [*cmd, str(context)], stdout=sink, stderr=subprocess.STDOUT, timeout=3600, check=False
        )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"build failed ({log}):\n{log.read_text()[-6000:]}"
    return seconds


def remove_image(tag: str) -> None:
    """Remove a built image (Buildah already removed its intermediate stages)."""
    sh([*PODMAN, "rmi", "--force", tag], check=False)


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool = False

    def flag(self) -> list[str]:
        return ["--volume", f"{self.source}:{self.target}{':ro' if self.read_only else ''}"]


def kubernetes_flags(user: str = "10001:10001") -> list[str]:
    """What a pod with the chart's security context gets: a numeric non-root user, a read-only
    root filesystem (and no tmpfs that Kubernetes would not add), no capabilities."""
    return [
        "--user",
        user,
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--network=host",
        *ULIMITS,
    ]


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        result = subprocess.run(
            [*PODMAN, "logs", self.name], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = sh([*PODMAN, "inspect", "--format", "{{.State.Running}}", self.name], check=False)
        return state.strip() == "true"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-6000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.logs()[-6000:]}")

    def exec(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PODMAN, "exec", self.name, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def terminate(self, timeout: float = 30) -> tuple[float, int]:
        """SIGTERM, as the kubelet sends it: (seconds until the process exited, its status)."""
        started = time.monotonic()
        sh([*PODMAN, "kill", "--signal", "TERM", self.name])
        status = int(sh([*PODMAN, "wait", self.name], timeout=timeout).strip())
        return time.monotonic() - started, status

    def remove(self) -> None:
        sh([*PODMAN, "rm", "--force", "--time", "0", self.name], check=False)


def start(
    image: str,
    name: str,
    port: int,
    *,
    mounts: tuple[Mount, ...] = (),
    env: dict[str, str] | None = None,
) -> Container:
    """Start `clipserve serve` in the image as Kubernetes would run it, on a free host port,
    with /tmp on a tmpfs (the chart's emptyDir); call wait_ready() for /readyz."""
    sh([*PODMAN, "rm", "--force", "--time", "0", name], check=False)
    cmd = [*PODMAN, "run", "--detach", "--name", name, *kubernetes_flags(), "--tmpfs", "/tmp"]
    for mount in mounts:
        cmd += mount.flag()
    # Loopback only: the port is on the host's network.
    environment = {**(env or {}), "CLIPSERVE_HOST": "127.0.0.1", "CLIPSERVE_PORT": str(port)}
    for key, value in environment.items():
        cmd += ["--env", f"{key}={value}"]
    sh([*cmd, image], timeout=300)
    return Container(name, f"http://127.0.0.1:{port}")


def run_once(
    image: str, command: list[str], *, mounts: tuple[Mount, ...], env: dict[str, str], user: str
) -> subprocess.CompletedProcess[str]:
    """Run a one-off command in the image (an init container), as Kubernetes would."""
    cmd = [*PODMAN, "run", "--rm", *kubernetes_flags(user), "--entrypoint", command[0]]
    for mount in mounts:
        cmd += mount.flag()
    for key, value in env.items():
        cmd += ["--env", f"{key}={value}"]
    return subprocess.run(
        [*cmd, image, *command[1:]], capture_output=True, text=True, timeout=300, check=False
    )


def volume_dir(path: Path, uid: int = 10001) -> Path:
    """A host folder for a volume, owned by the pod's fsGroup as Kubernetes makes it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path
