"""What logins cost the team server (catgan.tracking.server): one ``log_metric`` call through a
server with logins, MLflow's login cache off (``auth_cache_ttl_seconds = 0``, MLflow's default) and
on (catgan's setting), as a ratio to the same call through a server without logins.

The three servers run side by side, each as `make server` starts it (its own PostgreSQL, 2
workers, catgan's gate, 127.0.0.1), and are called in turn, round after round, so that a busy
machine slows all three alike. One untimed round first: each worker checks a password once before
its cache holds it.

    python -m benchmarks.login_cache [--calls 20] [--rounds 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from catgan.tracking import auth, server
from catgan.tracking.localserver import free_port

# name -> (logins, seconds a worker trusts a checked password)
CONFIGS = {"no logins": (False, 0), "logins, no cache": (True, 0),
           "logins, cache": (True, auth.LOGIN_CACHE_S)}


@contextlib.contextmanager
def team_server(logins: bool, cache_s: int) -> Iterator[str]:
    """A server as `make server` starts it, in a temp folder; its URL, with the admin's login."""
    # Not under /tmp's private folders: as root, PostgreSQL runs as user postgres and must reach it.
    folder = Path(tempfile.mkdtemp(prefix="catgan-bench-server-"))
    folder.chmod(0o755)
    try:
        url = server.start(folder, port=free_port(), auth=logins, login_cache_s=cache_s)
        try:
            if logins:
                user, password = (urllib.parse.quote(part, safe="") for part in
                                  auth.read_credentials(auth.credentials_file(folder, auth.ADMIN)))
                url = url.replace("http://", f"http://{user}:{password}@", 1)
            yield url
        finally:
            server.stop(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per log_metric call for each config, one value per round."""
    from mlflow.tracking import MlflowClient

    with contextlib.ExitStack() as stack:
        runs = {}
        for name, (logins, cache_s) in CONFIGS.items():
            client = MlflowClient(stack.enter_context(team_server(logins, cache_s)))
            experiment = client.create_experiment("login-cache")
            runs[name] = client, client.create_run(experiment).info.run_id
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for round_ in range(rounds + 1):
            for name, (client, run_id) in runs.items():
                started = time.perf_counter()
                for step in range(calls):
                    client.log_metric(run_id, "value", float(step), step=round_ * calls + step)
                if round_:  # the first round only fills the caches
                    times[name].append((time.perf_counter() - started) / calls)
        return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="log_metric calls per round and server")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--json", type=Path, help="write the raw timings here")
    args = parser.parse_args(argv)
    times = measure(args.calls, args.rounds)
    base = statistics.median(times["no logins"])
    print(f"one log_metric call, median of {args.rounds} rounds of {args.calls} calls:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:17s} {median * 1000:7.1f} ms  (range {min(seconds) * 1000:.1f}-"
              f"{max(seconds) * 1000:.1f})  {median / base:5.2f}x the call without logins")
    if args.json:
        args.json.write_text(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
