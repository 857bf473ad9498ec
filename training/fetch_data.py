"""Install the default model's training and evaluation data into a cache folder (idempotent).

    python -m training.fetch_data          # about 110 MB of packages, ~30 s; then nothing to do

Everything comes from package registries through their ordinary clients, pinned to exact
versions so that training is reproducible: emoji images and names from npm (`npm pack`), fonts
from Debian (`apt-get download`, unpacked with `dpkg-deb -x`, no root needed). MNIST,
scikit-learn's digits and scikit-image's photos ship inside Python packages and need no fetch.
The cache is `$CLIPSERVE_DATA_CACHE` or `.cache/training-data` in the repository (gitignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# name@version -> licence of what we use from it (recorded in the model card)
NPM = {
    "emoji-datasource-google@16.0.0": "images: Apache-2.0 (Noto Emoji); names: MIT",
    "emoji-datasource-twitter@16.0.0": "images: CC-BY-4.0 (Twemoji); names: MIT",
    "emojibase-data@17.0.0": "MIT (labels and keywords from Unicode CLDR, Unicode licence)",
}
# Debian 12 font packages (name=version) -> licence. No share-alike licence among them.
DEBIAN = {
    "fonts-dejavu-core=2.37-6": "Bitstream Vera licence (permissive)",
    "fonts-dejavu-extra=2.37-6": "Bitstream Vera licence (permissive)",
    "fonts-liberation2=2.1.5-1": "OFL-1.1",
    "fonts-freefont-ttf=20120503-10": "GPL-3+ with font exception",
    "fonts-urw-base35=20200910-7": "AGPL-3 with font exception",
    "fonts-comic-neue=2.51-4": "OFL-1.1",
    "fonts-cantarell=0.303.1-1": "OFL-1.1",
    "fonts-open-sans=1.11-2": "Apache-2.0",
    "fonts-go=0~20170330-1": "BSD-3-Clause",
    "fonts-crosextra-caladea=20200211-1": "Apache-2.0",
    "fonts-ebgaramond=0.016+git20210310.42d4f9f2-1": "OFL-1.1",
    "fonts-quicksand=0.2016-2.1": "OFL-1.1",
    "fonts-sil-gentium=20081126:1.03-4": "OFL-1.1",
}
# what is kept of each npm package (the rest, e.g. sprite sheets, is dropped)
NPM_KEEP = ("package/emoji.json", "package/img/google/64/", "package/img/twitter/64/")
NPM_KEEP += ("package/en/data.json",)


def cache_dir() -> Path:
    return Path(os.environ.get("CLIPSERVE_DATA_CACHE", REPO / ".cache" / "training-data"))


def _stamped(folder: Path, want: str) -> bool:
    stamp = folder / ".fetched"
    return stamp.is_file() and stamp.read_text() == want


def _npm(spec: str, folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", tmp, spec],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(NPM_KEEP) and m.isfile()]
            tar.extractall(folder, members=members, filter="data")


def _debian(spec: str, folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["apt-get", "download", "-q", spec]
        if subprocess.run(cmd, cwd=tmp, capture_output=True).returncode != 0:
            # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob("*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)


def fetch(root: Path | None = None) -> Path:
    """Make sure every pinned package is unpacked under the cache; returns the cache folder."""
    root = root or cache_dir()
    for specs, kind, install in ((NPM, "npm", _npm), (DEBIAN, "debian", _debian)):
        for spec in specs:
            folder = root / kind / spec.replace("=", "_").replace("@", "_").replace(":", "_")
            if _stamped(folder, spec):
                continue
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            for tool in ("npm",) if kind == "npm" else ("apt-get", "dpkg-deb"):
                if shutil.which(tool) is None:
                    raise SystemExit(f"fetch_data: {spec} needs {tool}, which is not installed")
            print(f"fetch_data: {spec}", flush=True)
            install(spec, folder)
            (folder / ".fetched").write_text(spec)
    return root


def npm_package(name: str, root: Path | None = None) -> Path:
    """The unpacked `package/` folder of a pinned npm package."""
    (spec,) = [s for s in NPM if s.rsplit("@", 1)[0] == name]
    return (root or cache_dir()) / "npm" / spec.replace("@", "_") / "package"


def font_files(root: Path | None = None) -> list[Path]:
    """Every TrueType / OpenType font in the pinned Debian packages, sorted by file name."""
    folder = (root or cache_dir()) / "debian"
    found = [p for p in folder.rglob("*") if p.suffix in (".ttf", ".otf")]
    return sorted(found, key=lambda p: p.name)


if __name__ == "__main__":
    print(f"training data in {fetch()}")
