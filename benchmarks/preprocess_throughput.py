"""Preprocess images/second and peak memory: catgan's preprocess against a plain Pillow loop.

Every run is a fresh subprocess (the same script with --child), so each starts with the same
imports and its peak resident memory is its own: ru_maxrss of the process itself (RUSAGE_SELF)
and of its largest pool worker (RUSAGE_CHILDREN, read after the pool is joined). Time is measured
inside the subprocess around the work alone, listing the files included. Runs alternate between
the methods and the table shows the medians over --repeats.

Run from the repo root:  python -m benchmarks.preprocess_throughput [--count 8000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import common
from catgan.data.preprocess import preprocess
from catgan.errors import cli_entry

SIZE = 64
METHODS = {
    "sequential": "plain Pillow loop",
    "workers=0": "catgan preprocess, workers=0 (one per core)",
    "workers=1": "catgan preprocess, workers=1",
}


def plain_resize_crop(img: Image.Image, size: int) -> Image.Image:
    scale = size / min(img.size)
    new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
    if new != img.size:
        img = img.resize(new, Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def sequential(raw: Path, out: Path) -> int:
    """The loop a notebook would write: open, RGB, resize + crop, asarray, stack, save."""
    arrays = []
    for path in common.image_files(raw):
        with Image.open(path) as img:
            arrays.append(np.asarray(plain_resize_crop(img.convert("RGB"), SIZE)).transpose(2, 0, 1))
    stacked = np.stack(arrays)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", stacked)
    return len(stacked)


def child(method: str, raw: Path, out: Path) -> dict:
    """Run one method in this process; time and peak memory as JSON-ready numbers."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "sequential":
        kept = sequential(raw, out)
    else:
        manifest = preprocess(raw, out, image_size=SIZE, min_size=32, dedup=True, max_bad_fraction=0.05,
                              workers=int(method.split("=")[1]))
        kept = manifest["files_used"]
    seconds = time.perf_counter() - start
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {"seconds": seconds, "images_out": kept,
            "rss_after_imports_mib": before / kib,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
            "peak_rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
            "output_mib": (out / "images.npy").stat().st_size / 2**20}


def run_child(method: str, raw: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(common.REPO),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.preprocess_throughput", "--child", method,
                           str(raw), str(out)], cwd=common.REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{method} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, list[dict]], count: int) -> tuple[str, list[dict]]:
    rows, cells = [], []
    base = common.median([r["seconds"] for r in results["sequential"]])
    for method, runs in results.items():
        seconds = common.median([r["seconds"] for r in runs])
        row = {"method": method, "images_in": count, "seconds": seconds, "img_s": count / seconds,
               "vs_sequential": base / seconds, "runs": runs,
               **{k: max(r[k] for r in runs) for k in ("images_out", "rss_after_imports_mib",
                                                        "peak_rss_mib", "peak_rss_worker_mib",
                                                        "output_mib")}}
        rows.append(row)
        cells.append([METHODS[method], f"{count:,}", f"{seconds:.2f}", f"{row['img_s']:,.0f}",
                      f"{row['vs_sequential']:.2f}x", f"{row['rss_after_imports_mib']:.0f}",
                      f"{row['peak_rss_mib']:.0f}",
                      f"{row['peak_rss_worker_mib']:.0f}" if row["peak_rss_worker_mib"] else "-",
                      f"{row['output_mib']:.1f}"])
    headers = ["Method", "Images", "Time (s)", "img/s", "vs sequential", "RSS after imports (MiB)",
               "Peak RSS, main (MiB)", "Peak RSS, largest worker (MiB)", "Output array (MiB)"]
    return common.markdown_table(headers, cells), rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=common.default_data(),
                        help="folder or .zip of images (default: the shared cat sample when present, "
                             "else synthetic JPEGs)")
    parser.add_argument("--count", type=int, default=0,
                        help="images to process: links cycling over the files (default: the files)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "RAW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.count < 0:
        parser.error("--repeats must be >= 1 and --count >= 0")
    return args


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        method, raw, out = args.child
        print(json.dumps(child(method, Path(raw), Path(out))))
        return
    load_before = common.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, data = common.prepare_images(args.data, tmp)
        files = common.image_files(root)
        raw = common.link_images(files, tmp / "raw", args.count)
        count = max(args.count, len(files))
        common.warm_page_cache(files)
        results: dict[str, list[dict]] = {method: [] for method in METHODS}
        for i in range(args.repeats):
            for method in METHODS:
                out = tmp / f"out-{method}-{i}"
                results[method].append(run_child(method, raw, out))
                shutil.rmtree(out)
    text, rows = table(results, count)
    info = {**common.machine(), "data": data, "load_average_before": load_before,
            "load_average_after": common.load_average()}
    print(common.describe(info), "", text, sep="\n")
    if args.json:
        common.write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
