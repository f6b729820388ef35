"""What logging the generator as an MLflow model adds to a train stage run: seconds and bytes.

Each variant in a fresh process, as each train stage is (torch.export's first use included): a
generator at the committed settings (latent 128) logged by stages.train.log_generator into a
temporary SQLite store, timed from the call to its return, and the logged folder's size.

    python -m benchmarks.model_logging
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

_ONE = """
import json, sys, tempfile, time
from pathlib import Path
from catgan.config import parse_params
from catgan.model.nets import build
from catgan.tracking.client import MlflowTracker
from catgan.training.outputs import TrainResult
from stages.train import log_generator

variant, folder = sys.argv[1], Path(sys.argv[2])
params = parse_params({"model": {"variant": variant}, "tracking": {"enabled": True}})
tracker = MlflowTracker(f"sqlite:///{folder / 'mlflow.db'}", "bench", folder / "artifacts")
tracker.start({}, {})
G, D = build(variant, params.model.latent_dim, "dcgan")
started = time.perf_counter()
log_generator(params, TrainResult(G, D), tracker)
seconds = time.perf_counter() - started
tracker.finish()
files = [p for p in (folder / "artifacts").rglob("*") if p.is_file() and "generator" in p.parts]
print(json.dumps({"variant": variant, "seconds": seconds,
                  "bytes": sum(p.stat().st_size for p in files),
                  "weights_bytes": sum(p.stat().st_size for p in files if p.suffix == ".pt2")}))
"""


def main() -> None:
    for variant in ("baseline", "fused"):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", _ONE, variant, tmp], capture_output=True,
                                 text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{row['variant']:9s} {row['seconds']:5.2f} s  {row['bytes'] / 2**20:5.1f} MiB "
              f"(model.pt2 {row['weights_bytes'] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
