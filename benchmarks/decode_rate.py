"""Image preprocessing rate on this machine: one thread, then a pool of N threads.

python benchmarks/decode_rate.py --threads 16 --size 600x400
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

from service.bench import _image_bytes
from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import ImagePreprocess


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", default="600x400")
    parser.add_argument("--target", type=int, default=224)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    blobs = [_image_bytes((w, h), "JPEG", s) for s in range(32)]
    pre = ImagePreprocessor(
        ImagePreprocess(size=args.target, mean=[0.5] * 3, std=[0.5] * 3), ImageLimits()
    )
    n = 200
    t = time.perf_counter()
    for i in range(n):
        pre(blobs[i % 32])
    one = n / (time.perf_counter() - t)
    n = 4000
    with ThreadPoolExecutor(args.threads) as pool:
        t = time.perf_counter()
        list(pool.map(lambda i: pre(blobs[i % 32]), range(n)))
        many = n / (time.perf_counter() - t)
    head = f"{args.size} JPEG -> {args.target}"
    print(f"{head}: 1 thread {one:.0f}/s, {args.threads} threads {many:.0f}/s")


if __name__ == "__main__":
    main()
