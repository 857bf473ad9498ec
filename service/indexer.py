"""`clipserve index DIR --collection NAME`: bulk-index a folder of images through the HTTP API.

Resumable: each file's id is derived from its content hash, and ids the collection already holds
are skipped, so an interrupted run picks up where it stopped (and a renamed file is not stored
twice). Payload: the relative path, folder, file name and hash, plus `<file>.json` if present.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_FILE_NS = uuid.UUID("9a4d8f0e-1b0c-4c38-8f5e-6a0f1f7d2c33")


@dataclass
class IndexReport:
    found: int = 0
    skipped: int = 0
    indexed: int = 0
    failed: int = 0


def image_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def find_images(root: Path) -> list[Path]:
    """The image files under `root`; a missing folder or one without images is a mistake to
    report (not "0 images" and success)."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{root} {what}: pass the folder that holds the images")
    files = list(image_files(root))
    if not files:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no image files ({kinds}) under {root}")
    return files


def file_id(data: bytes) -> str:
    return str(uuid.uuid5(_FILE_NS, hashlib.sha256(data).hexdigest()))


def payload_for(root: Path, path: Path, data: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "path": str(path.relative_to(root)),
        "folder": path.parent.name,
        "filename": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    sidecar = path.with_name(path.name + ".json")
    if sidecar.is_file():
        payload.update(json.loads(sidecar.read_text()))
    return payload


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:500]}")
    return dict(response.json())


def index_folder(
    client: httpx.Client, root: Path, collection: str, batch: int = 32, progress: bool = True
) -> IndexReport:
    from tqdm import tqdm

    files = find_images(root)
    report = IndexReport(found=len(files))
    _check(client.put(f"/v1/collections/{collection}", json={}))
    bar = tqdm(total=len(files), unit="img", disable=not progress)
    for start in range(0, len(files), batch):
        chunk = [(p, p.read_bytes()) for p in files[start : start + batch]]
        ids = [file_id(data) for _, data in chunk]
        known = set(
            _check(client.post(f"/v1/collections/{collection}/points/exists", json={"ids": ids}))[
                "ids"
            ]
        )
        todo = [(p, d, i) for (p, d), i in zip(chunk, ids, strict=True) if i not in known]
        report.skipped += len(chunk) - len(todo)
        if todo:
            items = [
                {"id": i, "image": base64.b64encode(d).decode(), "payload": payload_for(root, p, d)}
                for p, d, i in todo
            ]
            response = client.post(f"/v1/collections/{collection}/points", json={"items": items})
            if response.status_code == 200:
                report.indexed += len(todo)
            else:  # index the good ones, report the bad ones by path
                bad = {e["index"] for e in response.json().get("error", {}).get("items", [])}
                if not bad:
                    _check(response)
                good = [it for k, it in enumerate(items) if k not in bad]
                for k in sorted(bad):
                    bar.write(f"skipped {todo[k][0]}: {response.json()['error']['items']}")
                if good:
                    _check(
                        client.post(f"/v1/collections/{collection}/points", json={"items": good})
                    )
                report.indexed += len(good)
                report.failed += len(bad)
        bar.update(len(chunk))
    bar.close()
    return report
