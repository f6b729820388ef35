"""The GPU hour in one 600 s device command: the whole study, finished and packed by 480 s, then the
steady-state throughput benchmark in what is left, then the files that come back, 8 at most.

    benchmarks/gpu_hour.sh --data .gpu-data/cats-kaggle.zip --out "$OUT" [gpu_study options]

1. ``python -m benchmarks.gpu_study`` at its defaults (every arm that is not an ablation x seeds
   0, 1, 2 and the saturating run, 60 epochs, one wave on CUDA; ``--course`` adds the course loop's
   parity runs) with as many ``--frames`` as keep the archive under 16 MiB, and its deadlines
   counted from this command's start: no run starts after ``--budget-s`` (60), runs still going at
   ``--stop-s`` (445) are stopped and the rest packed, and the study is killed at
   ``--study-end-s`` (480) should packing hang (then no archive comes back).
2. ``python -m benchmarks.train_throughput`` with ``--throughput``'s options (default: gpu_check.sh
   part (b)'s) on the same data, stopped at ``--end-s`` (570); its JSON keeps the rounds done.
3. Into ``--out``: study.tar.gz, each arm's best generator (fp16, 8 MiB at most), throughput.json
   and gpu_hour.log (this command's whole output, written as it goes, so a cut command still
   returns it); then one summary. Refused before anything runs if that would exceed 8 files.

Options it does not know go to gpu_study (``--epochs``, ``--arms``, ``--course``, ``-S`` ...).
benchmarks/README.md, "GPU hour", has the plan, the time estimate and its basis.
"""
from __future__ import annotations

import time

STARTED = time.monotonic()  # before torch's import (seconds of it): the deadlines count from here

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks import gpu_study  # noqa: E402
from catgan.errors import UserError, cli_entry  # noqa: E402
from catgan.fileio import atomic_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FILES = 8  # the most files a device command returns
LOG, THROUGHPUT_JSON = "gpu_hour.log", "throughput.json"
THROUGHPUT = "--device cuda --configs fp32,bf16,bf16+cl"  # gpu_check.sh's part (b)
MIN_THROUGHPUT_S = 30  # less than this left: start and data alone would take it (README estimate)
GRACE_S = 5  # after SIGTERM, before SIGKILL
SET_HERE = ("--data", "--out", "--budget-s", "--stop-s")  # gpu_study flags this command sets
# Archive sizes measured in the H200 one (benchmarks/README.md, "GPU study"): 3.3 MiB for an
# animated run's 17 grids, 0.23-0.25 MiB for any other run; aimed at 14 of the 16 MiB a file may have.
GRID_MIB, RUN_MIB, ARCHIVE_MIB = 0.2, 0.25, 14


def elapsed() -> float:
    return time.monotonic() - STARTED


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(this command's options, gpu_study's parsed from the rest): gpu_study's errors, as its own."""
    p = argparse.ArgumentParser(prog="benchmarks/gpu_hour.sh", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a zip or folder of images")
    p.add_argument("--out", type=Path, required=True, help="the files that come back go here ($OUT)")
    p.add_argument("--work", type=Path, help="the study folder's parent (default: a temp folder)")
    p.add_argument("--budget-s", type=float, default=60, help="no study run starts after it")
    p.add_argument("--stop-s", type=float, default=445, help="study runs still going are stopped")
    p.add_argument("--study-end-s", type=float, default=480, help="the study is killed")
    p.add_argument("--end-s", type=float, default=570, help="the throughput benchmark is stopped")
    p.add_argument("--throughput", default=THROUGHPUT,
                   help=f"train_throughput's options (default: {THROUGHPUT!r}); '' leaves it out")
    args, rest = p.parse_known_args(argv)
    clash = [a for a in rest if a.split("=")[0] in SET_HERE]
    if clash:
        p.error(f"{clash[0]}: this command sets it for gpu_study; pass it to gpu_hour itself")
    deadlines = [("--budget-s", args.budget_s), ("--stop-s", args.stop_s),
                 ("--study-end-s", args.study_end_s), ("--end-s", args.end_s)]
    for (name, value), (later, after) in zip(deadlines, deadlines[1:]):
        if not 0 < value < after:
            p.error(f"{name} {value:g}: must be above 0 and below {later} ({after:g})")
    args.throughput = shlex.split(args.throughput)
    study = gpu_study.parse_args([*rest, "--data", str(args.data), "--out", "unused"])
    frames_given = any(a.split("=")[0] == "--frames" for a in rest)
    study.rest = rest if frames_given else ["--frames", str(frames_that_fit(study)), *rest]
    return args, study


def frames_that_fit(study: argparse.Namespace) -> int:
    """Grids kept per animated run (each arm's lowest-seed study run) so that the archive stays
    near ARCHIVE_MIB: 16 for three arms, 11 for five."""
    animated = len(study.arms) if study.study else 0
    others = len(gpu_study.runs(study)) - animated
    room = ARCHIVE_MIB - others * RUN_MIB
    return max(1, min(16, int(room / (animated * GRID_MIB)))) if animated else 1


def check_files(args: argparse.Namespace, study: argparse.Namespace) -> None:
    """Refuses a plan whose files would not all come back: the archive, a generator per arm, the
    log and the throughput JSON, with whatever --out already holds."""
    generators = len(study.arms) if study.study else 0
    there = list(args.out.iterdir()) if args.out.is_dir() else []
    total = len(there) + 1 + generators + 1 + bool(args.throughput)
    if total > FILES:
        raise UserError(f"--arms: {generators} arms make {generators} generator files; with the "
                        f"archive, the log{', throughput.json' if args.throughput else ''} and "
                        f"{len(there)} files already in --out that is {total}, above the {FILES} a "
                        f"device command returns; pick at most {generators - total + FILES} arms")


class Log:
    """Printed and appended to --out's log as it goes: a command cut at its limit still returns it."""

    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")
            self.file.flush()


def run_part(cmd: list[str], until: float, log: Log, keep: tuple[str, ...] = ()
             ) -> tuple[int | None, list[str]]:
    """``cmd`` with its output into the log, stopped with its children at ``until`` (seconds from
    the start). Its exit status (None if stopped) and its lines that start with one of ``keep``."""
    log(f"== at {elapsed():.0f} s, until {until:.0f} s: {shlex.join(cmd)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                       os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}  # progress bars would fill the log
    # A session of its own: the study's runs are its children, and a stop must reach them too.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    noted: list[str] = []

    def copy() -> None:
        for line in proc.stdout:
            log(line.rstrip("\n"))
            if line.startswith(keep):
                noted.append(line.strip())

    reader = threading.Thread(target=copy)
    reader.start()
    try:
        code = proc.wait(max(0.0, until - elapsed()))
    except subprocess.TimeoutExpired:
        code = None
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GRACE_S)
        _signal_group(proc, signal.SIGKILL)  # what is left of it: its runs hold the pipe open too
        proc.wait()
    reader.join()
    return code, noted


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # all of it gone already
        os.killpg(proc.pid, sig)


def collect(work: Path, out: Path) -> list[Path]:
    """The archive and the generators from ``work``, each copied whole into ``out``."""
    files = sorted(work.glob("study.tar.gz")) + sorted(work.glob("study.generator-*.pt"))
    copied = []
    for src in files:
        with atomic_path(out / src.name, suffix=src.suffix) as tmp:
            shutil.copyfile(src, tmp)
        copied.append(out / src.name)
    return copied


def _left(deadline: float) -> str:
    """Seconds from now to ``deadline``, for gpu_study's own clock; at least 0.1, as 0 means none."""
    return f"{max(0.1, deadline - elapsed()):.1f}"


def outcome(code: int | None, limit: str) -> str:
    return f"stopped at {limit}" if code is None else ("ok" if code == 0 else f"exit {code}")


def gpu_hour(args: argparse.Namespace, study: argparse.Namespace, work: Path, log: Log) -> int:
    python = sys.executable
    # The study's own report lines, and its provenance (code, torch, CUDA, device, wall time).
    notes = ("total wall time", "budget spent", "time limit", "FAILED", "commit ", "no git checkout")
    study_code, noted = run_part(
        [python, "-m", "benchmarks.gpu_study", "--data", str(args.data), "--out", str(work),
         "--budget-s", _left(args.budget_s), "--stop-s", _left(args.stop_s), *study.rest],
        args.study_end_s, log, notes)
    study_end, throughput_code = elapsed(), 0
    left = args.end_s - study_end
    if not args.throughput:
        throughput = "left out (--throughput '')"
    elif left < MIN_THROUGHPUT_S:
        throughput, throughput_code = f"not started: {left:.0f} s left, needs {MIN_THROUGHPUT_S}", 1
    else:
        data = [] if "--data" in args.throughput else ["--data", str(args.data)]
        throughput_code, _ = run_part([python, "-m", "benchmarks.train_throughput",
                                       *args.throughput, *data, "--json",
                                       str(args.out / THROUGHPUT_JSON)], args.end_s, log)
        throughput = f"{outcome(throughput_code, f'--end-s {args.end_s:g}')}, " \
                     f"ended at {elapsed():.0f} s"
    copied = collect(work, args.out)
    files = sorted(p for p in args.out.iterdir() if p.is_file())
    log(f"\n== GPU hour summary, at {elapsed():.0f} s of {args.end_s:g} s")
    log(f"study: {outcome(study_code, f'--study-end-s {args.study_end_s:g}')}, ended at "
        f"{study_end:.0f} s (deadlines: runs start by {args.budget_s:g} s, stop at "
        f"{args.stop_s:g} s, packed by {args.study_end_s:g} s)")
    for line in noted:
        log(f"  {line}")
    log(f"throughput: {throughput}")
    log(f"files in {args.out} ({len(files)} of at most {FILES}):")
    for path in files:
        log(f"  {path.name}: {path.stat().st_size / 2**20:.2f} MiB")
    problems = [f"{len(files)} files in {args.out}, above the {FILES} a device command returns"
                ] if len(files) > FILES else []
    if not any(p.name == "study.tar.gz" for p in copied):
        problems.append("no study.tar.gz: the study did not pack (see above)")
    for problem in problems:
        log(f"FAILED {problem}")
    # A part stopped at its deadline (None) counts as failed, as in gpu_check.sh.
    return 1 if problems or study_code != 0 or throughput_code != 0 else 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args, study = parse_args(argv)
    check_files(args, study)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / LOG)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return gpu_hour(args, study, args.work, log)
    with tempfile.TemporaryDirectory(prefix="catgan-gpu-hour-") as work:
        return gpu_hour(args, study, Path(work), log)


if __name__ == "__main__":
    sys.exit(main())
