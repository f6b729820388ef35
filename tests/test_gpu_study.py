"""benchmarks/gpu_study.py on the CPU with tiny settings: the whole study into one archive, resumed,
in child processes, cut by its budget; the archive unpacked safely and turned into the study page."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from catgan import cli
from catgan.config import parse_params
from catgan.data.archive import safe_extract_zip
from catgan.data.preprocess import preprocess
from catgan.errors import UserError
from catgan.generate import weightsfile
from catgan.study import folder as studydir
from catgan.study.folder import load_study
from catgan.study import arms
from catgan.study import provenance
from catgan.study import standalone
from imagefactory import noise, png_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed: plain `pytest` would not find it
from benchmarks import gpu_hour, gpu_study, reference_loop  # noqa: E402

# One torch thread: two would spin against each other, and against anything else on 2 cores.
TINY = ["--epochs", "1", "--frames", "2", "-S", "train.batch_size=4", "-S", "train.steps_per_epoch=2",
        "-S", "train.log_every=1", "-S", "train.threads=1", "-S", "eval.num_samples=8",
        "-S", "eval.monitor_samples=8", "-S", "eval.batch_size=8", "-S", "eval.kid_subset_size=4"]
# Not on the GPU machine: the study must run without them (tqdm is optional everywhere).
MISSING_THERE = ("yaml", "mlflow", "dvc", "torchvision", "kaggle", "tqdm", "imageio")
RUNNER = """
import runpy, sys
for name in {missing!r}:
    sys.modules[name] = None  # an import of any of them now fails
sys.argv = ["gpu_study", *{args!r}]
runpy.run_module("benchmarks.gpu_study", run_name="__main__", alter_sys=True)
"""
# The study fixture's runs: every arm that is not an ablation x seeds 0 and 1, the saturating run,
# and the course loop's runs of the course arms.
EXPECTED = {*(f"study-{arm}-seed{s}" for arm in gpu_study.default_arms() for s in (0, 1)),
            "saturating-course-baseline-seed0", "course-course-baseline-seed0",
            "course-course-fused-seed0", "course-course-baseline-seed1", "course-course-fused-seed1"}


def write_zip(path: Path, count: int = 24) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"cats/{i}.png", png_bytes(noise(64, 64, i)))
    return path


def run_cli(*args: str, missing: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    script = RUNNER.format(missing=missing, args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study: the default arms x 2 seeds, the saturating run and, with --course, 4 course
    runs (the course arms'), in one process where PyYAML, MLflow, DVC, torchvision and tqdm cannot
    be imported."""
    tmp = tmp_path_factory.mktemp("gpu_study")
    data = write_zip(tmp / "cats.zip")
    out = tmp / "out"
    proc = run_cli("--data", data, "--out", out, "--seeds", "0", "1", "--parallel", "1", "--course",
                   *TINY, missing=MISSING_THERE)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data, out, proc.stdout


@pytest.mark.slow
def test_the_study_packs_every_run_into_one_small_archive(study, tmp_path):
    data, out, stdout = study
    archive = out / "study.tar.gz"
    assert archive.stat().st_size < 0.3 * 2**20 * len(EXPECTED)  # ~0.24 MiB a tiny run, grids included
    info, runs = load_study(studydir.unpack(archive, tmp_path))
    assert {run.name for run in runs} == EXPECTED
    assert "total wall time" in stdout and all(f"done  {name}" in stdout for name in EXPECTED)

    safe_extract_zip(data, tmp_path / "raw")  # what the pipeline's fetch and preprocess do
    d = parse_params({}).data
    manifest = preprocess(tmp_path / "raw", tmp_path / "prepared", image_size=d.image_size,
                          min_size=d.min_size, dedup=d.dedup, max_bad_fraction=d.max_bad_fraction,
                          workers=1)
    assert info["data"]["content_hash"] == manifest["content_hash"]
    assert info["data"]["images"] == 24 and info["settings"]["train.batch_size"] == 4

    for run in runs:
        meta = run.meta
        assert isinstance(meta["eval"]["swd"]["swd_avg"], float), run.name
        assert (meta["steps"], meta["batch_size"], meta["images_seen"]) == (2, 4, 8), run.name
        assert meta["wall_s"] > 0 and meta["device"].startswith("cpu")
        assert [row["step"] for row in run.steps] == [1, 2], run.name
        assert all(row["g_grad_norm"] > 0 for row in run.steps), run.name
        animated = meta["kind"] == "study" and meta["seed"] == 0
        assert [g.name for g in run.grids] == (["epoch_000.png"] if animated else []) + ["epoch_001.png"]
        if meta["kind"] == "course":
            assert run.history[0]["swd_avg"] is None and meta["epochs"] == 1
        else:
            assert run.history[0]["swd_avg"] > 0, run.name
    assert {r.meta["loss"] for r in runs} == {"non_saturating", "saturating", "ralsgan", "rpgan"}
    assert [r.meta["loss"] for r in runs if r.meta["kind"] == "saturating"] == ["saturating"]
    for run in runs:  # each run records its arm, and trained with the arm's overrides
        assert run.meta["overrides"] == arms.get(run.meta["arm"]).overrides, run.name
    modern = [r.meta["params"] for r in runs if r.meta["arm"] == "modern"]
    assert len(modern) == 2 and all(p["train.loss"] == "ralsgan" and p["model.d_norm"] == "spectral"
                                    and p["train.ema"] == 0.999 for p in modern)
    assert {r.meta["arm"] for r in runs if r.meta["kind"] == "course"} == {"course-baseline",
                                                                          "course-fused"}

    # Made by this tree's code, named by its content hash (and its commit where it is a checkout).
    made_by = info["provenance"]
    assert info["format"] == studydir.FORMAT == 4
    assert made_by["code"]["content_hash"] == provenance.content_hash()
    assert {run.meta["code"] for run in runs} == {made_by["code"]["content_hash"]}
    assert made_by["command"].startswith("python -m benchmarks.gpu_study --data ")
    assert made_by["torch"] == torch.__version__ and made_by["device"].startswith("cpu")
    assert made_by["wall_s"] > 0 and provenance.line(made_by) in stdout


@pytest.mark.slow
def test_the_lowest_swd_generator_of_each_arm_comes_back_beside_the_archive(study):
    _, out, stdout = study
    with tarfile.open(out / "study.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".pt") or "/weights" in n]  # files of their own
    _, runs = load_study(out / "study")
    for arm in gpu_study.default_arms():
        path = out / f"study.generator-{arm}.pt"
        assert 0 < path.stat().st_size <= weightsfile.LIMIT
        assert f"generator {path}: " in stdout
        info, _ = weightsfile.read(path)
        mine = [r for r in runs if (r.meta["kind"], r.meta["arm"]) == ("study", arm)]
        best = min(mine, key=lambda r: r.meta["eval"]["swd"]["swd_avg"])
        assert (info["arm"], info["run"], info["swd_avg"]) == \
            (arm, best.name, best.meta["eval"]["swd"]["swd_avg"])
        assert info["data_hash"] == load_study(out / "study")[0]["data"]["content_hash"]
    assert len(list(out.glob("study.generator-*.pt"))) == len(gpu_study.default_arms())


@pytest.mark.slow
def test_the_page_is_built_from_the_archive_and_the_generators_beside_it(study, tmp_path):
    _, out, _ = study
    html = tmp_path / "page" / "study" / "study.html"
    # As `catgan study-page` runs: whatever warns (scipy on a metric identical in every seed) would
    # reach its output.
    proc = subprocess.run([sys.executable, "-c", "import sys; from catgan.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "study-page", str(out / "study.tar.gz"),
                           "--out", str(tmp_path / "page")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert "identical in every seed" in proc.stdout and "nan" not in proc.stdout
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Parity with the course loop" in text
    study_arms = gpu_study.default_arms()  # course-baseline, course-fused, modern, ...
    assert sorted(p.name for p in (html.parent / "weights").iterdir()) == sorted(
        f"generator-{arm}.pt" for arm in study_arms)
    samples = re.search(r'<section id="samples">(.*?)</section>', text, re.S).group(1)
    assert all(f"<h3>{arm}</h3>" in samples for arm in study_arms)
    compare = re.search(r'<section id="compare">(.*?)</section>', text, re.S).group(1)
    pairs = [f"{b} vs {a}" for i, b in enumerate(study_arms) for a in study_arms[:i]]
    assert re.findall(r"<h3>(.*?)</h3>", compare) == pairs
    assert pairs[:3] == ["course-fused vs course-baseline", "modern vs course-baseline",
                         "modern vs course-fused"]
    assert text.count('<p class="verdict">') == len(pairs)
    assert 'id="provenance"' in text and 'class="missing"' not in text


@pytest.mark.slow
def test_a_second_call_skips_the_finished_runs_and_redoes_a_lost_one(study):
    data, out, _ = study
    shutil.rmtree(out / "study" / "runs" / "course-course-fused-seed1")  # as if killed before it ended
    before = {p: p.stat().st_mtime_ns for p in (out / "study" / "runs").glob("*/run.json")}
    proc = run_cli("--data", data, "--out", out, "--seeds", "0", "1", "--parallel", "1", "--course",
                   *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = {line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("skip")}
    assert skipped == EXPECTED - {"course-course-fused-seed1"} and "for 1 runs" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (out / "study" / "runs" / "course-course-fused-seed1" / "run.json").is_file()


@pytest.mark.slow
def test_a_run_killed_mid_way_goes_on_from_its_last_epoch_and_ends_as_if_never_stopped(tmp_path):
    data, name = write_zip(tmp_path / "cats.zip"), "study-modern-ada-seed0"
    args = ["--data", data, "--seeds", "0", "--arms", "modern-ada", "--no-saturating", *TINY,
            "--epochs", "4", "--frames", "5"]  # the last --epochs and --frames count
    whole = run_cli(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "cut"
    checkpoint = out / "work" / name / "last.pt"  # written after each epoch
    script = RUNNER.format(missing=(), args=[str(a) for a in [*args, "--out", out]])
    scratch = tmp_path / "tmp"  # the killed study cannot remove its temp folder: keep it in ours
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert checkpoint.is_file() and not (out / "study" / "runs" / name).exists()

    again = run_cli(*args, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    meta = json.loads((out / "study" / "runs" / name / "run.json").read_text(encoding="utf-8"))
    assert 1 <= meta["resumed_from"] < 4 and meta["epochs"] == 4
    whole_run, cut_run = tmp_path / "whole" / "study" / "runs" / name, out / "study" / "runs" / name
    assert json.loads((whole_run / "run.json").read_text(encoding="utf-8"))["resumed_from"] == 0
    files = ["history.csv", "steps.csv", *(f"grids/epoch_{e:03d}.png" for e in range(5))]
    for file in files:  # the grids of the epochs before the kill were kept in its work folder
        assert (cut_run / file).read_bytes() == (whole_run / file).read_bytes(), file
    assert not (out / "work" / name).exists()


def test_all_at_once_on_cuda_longest_first_and_one_at_a_time_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_study.os, "cpu_count", lambda: 16)
    data = {"images": 24, "content_hash": "h"}
    # The default plan: every arm that is not an ablation x seeds 0, 1, 2 and the saturating run,
    # no course-loop runs; on CUDA all in one wave.
    args = gpu_study.parse_args(["--data", "z.zip", "--out", str(tmp_path)])
    study_arms = [name for name, arm in arms.ARMS.items() if not arm.ablation]
    assert args.arms == study_arms and not args.course
    assert {"course-baseline", "course-fused", "modern", "modern-ada", "r3"} <= set(study_arms)
    jobs = gpu_study.plan(args, gpu_study.base_params(args)[0], tmp_path / "x.npy", data, tmp_path,
                          "code")
    assert {j.name for j in jobs} == {f"study-{a}-seed{s}" for a in study_arms for s in (0, 1, 2)} | {
        "saturating-course-baseline-seed0"}
    assert all(j.steps == 60 for j in jobs)  # 60 epochs of one step (24 images, batch 128)
    wave = gpu_study.start_order(jobs, gpu_study.runs_at_once(jobs, args, torch.device("cuda")))
    assert gpu_study.runs_at_once(jobs, args, torch.device("cuda")) == len(jobs)
    assert {j.params["train"]["threads"] for j in wave} == {16 // len(jobs)}  # 1 for 10 to 16 runs

    # --course adds the course loop's parity runs (2 course arms x 3 seeds), started first.
    args = gpu_study.parse_args(["--data", "z.zip", "--out", str(tmp_path), "--course"])
    raw, _ = gpu_study.base_params(args)
    jobs = gpu_study.plan(args, raw, tmp_path / "x.npy", data, tmp_path, "code")
    assert len(jobs) == 3 * len(study_arms) + 1 + 6

    parallel = gpu_study.runs_at_once(jobs, args, torch.device("cuda"))
    wave = gpu_study.start_order(jobs, parallel)
    assert parallel == len(jobs) and {j.name for j in wave} == {j.name for j in jobs}
    assert [j.kind for j in wave] == ["course"] * 6 + ["study"] * (3 * len(study_arms)) + ["saturating"]
    assert {j.params["train"]["threads"] for j in wave} == {1}  # 16 cores over 16 runs or more
    # a kind with no measured time yet (a third arm's) is taken as the longest
    odd = dataclasses.replace(jobs[0], kind="new")
    assert gpu_study.start_order([*jobs, odd], parallel)[0].kind == "new"

    parallel = gpu_study.runs_at_once(jobs, args, torch.device("cpu"))
    serial = gpu_study.start_order(jobs, parallel)
    assert parallel == 1 and [j.name for j in serial] == [j.name for j in jobs]  # pairs first
    assert {j.params["train"]["threads"] for j in serial} == {16}

    args = gpu_study.parse_args(["--data", "z.zip", "--out", str(tmp_path), "--parallel", "4",
                                 "--course", "-S", "train.threads=3"])
    jobs = gpu_study.plan(args, gpu_study.base_params(args)[0], tmp_path / "x.npy", data,
                          tmp_path, "code")
    parallel = gpu_study.runs_at_once(jobs, args, torch.device("cpu"))
    limited = gpu_study.start_order(jobs, parallel)
    assert parallel == 4 and limited[0].kind == "course"  # several at once: longest first
    assert {j.params["train"]["threads"] for j in limited} == {3}  # -S wins


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_runs_in_child_processes_with_parallel(tmp_path):
    data = write_zip(tmp_path / "cats.zip")
    proc = run_cli("--data", data, "--out", tmp_path / "out", "--seeds", "0", "--variants", "fused",
                   "--no-saturating", "--course", "--parallel", "2", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, runs = load_study(tmp_path / "out" / "study")
    assert {run.name for run in runs} == {"study-course-fused-seed0", "course-course-fused-seed0"}


def test_the_study_imports_without_what_the_gpu_machine_lacks():
    modules = ["benchmarks.gpu_study", "benchmarks.reference_loop", "catgan.study.standalone",
               "catgan.study.folder", "catgan.training.loop", "catgan.metrics.evaluate",
               "catgan.metrics.swd", "catgan.metrics.diversity", "catgan.metrics.inception"]
    script = (f"import sys\nfor name in {MISSING_THERE!r}:\n    sys.modules[name] = None\n"
              + "".join(f"import {m}\n" for m in modules))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_a_spent_budget_starts_no_run_and_other_params_are_not_resumed(tmp_path):
    data = write_zip(tmp_path / "cats.zip", count=8)
    proc = run_cli("--data", data, "--out", tmp_path / "out", "--seeds", "0", "--budget-s", "1e-9",
                     *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every arm that is not an ablation, and the saturating run
    assert f"budget spent: {len(gpu_study.default_arms()) + 1} runs not started" in proc.stdout
    with tarfile.open(tmp_path / "out" / "study.tar.gz") as tar:
        assert "study/study.json" in tar.getnames()

    # The same --out with other params would mix two studies: refused, nothing changed.
    proc = run_cli("--data", data, "--out", tmp_path / "out", "--seeds", "0", "--budget-s", "1e-9",
                   *TINY, "-S", "train.lr=0.001")
    assert proc.returncode == 2
    assert "a study with other params" in proc.stderr and "pass another --out" in proc.stderr


def test_runs_still_going_at_the_time_limit_are_stopped_and_the_rest_packed(tmp_path):
    data = write_zip(tmp_path / "cats.zip", count=8)
    # Both runs start at once and are stopped long before their processes have imported torch.
    proc = run_cli("--data", data, "--out", tmp_path / "out", "--seeds", "0", "--variants", "fused",
                   "--no-saturating", "--course", "--parallel", "2", "--stop-s", "0.5", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stop  course-course-fused-seed0: the time limit (--stop-s) came first" in proc.stdout
    assert ("time limit: 2 runs stopped (course-course-fused-seed0, study-course-fused-seed0)"
            in proc.stdout)
    with tarfile.open(tmp_path / "out" / "study.tar.gz") as tar:
        names = tar.getnames()
    assert "study/study.json" in names and not any(n.startswith("study/runs/") for n in names)
    assert not list((tmp_path / "out" / "study" / "runs").glob("*/run.json"))


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path):
    data = write_zip(tmp_path / "cats.zip", count=8)
    # One batch of 16 from 8 images: catgan's loop takes a short batch, the course's drops it.
    proc = run_cli("--data", data, "--out", tmp_path / "out", "--seeds", "0", "--variants", "fused",
                   "--no-saturating", "--course", *TINY, "-S", "train.batch_size=16")
    assert proc.returncode == 1
    assert "FAILED course-course-fused-seed0: fewer images than one batch of 16" in proc.stdout
    assert "FAILED: course-course-fused-seed0" in proc.stderr
    with tarfile.open(tmp_path / "out" / "study.tar.gz") as tar:
        names = tar.getnames()
    assert "study/runs/study-course-fused-seed0/run.json" in names
    assert not any(name.startswith("study/runs/course") for name in names)


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            body = b"{}" if member.isfile() else None
            if body is not None:
                member.size = len(body)
            tar.addfile(member, io.BytesIO(body) if body is not None else None)
    return path


def test_unpack_refuses_a_member_outside_the_study(tmp_path):
    archive = _tar(tmp_path / "evil.tar.gz", [tarfile.TarInfo("study/study.json"),
                                              tarfile.TarInfo("../evil")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserError, match=r"'\.\./evil' lies outside the archive's study/ folder"):
        studydir.unpack(archive, dest)
    assert not (tmp_path / "evil").exists() and list(dest.iterdir()) == []


def test_unpack_refuses_a_link_out_of_the_study(tmp_path):
    link = tarfile.TarInfo("study/runs/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = _tar(tmp_path / "link.tar.gz", [tarfile.TarInfo("study/study.json"), link])
    with pytest.raises(UserError, match="cannot be unpacked"):
        studydir.unpack(archive, tmp_path / "dest")


def test_a_prepared_array_has_the_manifests_content_hash(tmp_path):
    for i in range(6):
        noise(80, 64, i).save(tmp_path / f"{i}.png")
    noise(80, 64, 0).save(tmp_path / "copy.png")  # dropped by dedup, as in the pipeline
    manifest = preprocess(tmp_path, tmp_path / "prepared", image_size=64, min_size=32, dedup=True,
                          max_bad_fraction=0.0, workers=1)
    params = parse_params({"data": {"workers": 1}})
    npy, data = standalone.prepare_data(tmp_path / "prepared" / "images.npy", tmp_path / "a", params)
    assert (data["content_hash"], data["images"]) == (manifest["content_hash"], 6)
    assert npy == tmp_path / "prepared" / "images.npy"  # read where it is, not copied
    folder = tmp_path / "folder"
    folder.mkdir()
    for png in tmp_path.glob("*.png"):
        png.rename(folder / png.name)
    _, data = standalone.prepare_data(folder, tmp_path / "b", params)
    assert data["content_hash"] == manifest["content_hash"]
    with pytest.raises(UserError, match="--data .*notes.txt"):
        standalone.prepare_data(tmp_path / "notes.txt", tmp_path / "c", params)


def test_overrides_are_typed_and_keys_the_study_sets_are_refused():
    raw = gpu_study.parse_overrides(["train.batch_size=4", "train.lr=1e-3", "model.init=dcgan",
                                     "train.channels_last=false"])
    assert raw == {"train": {"batch_size": 4, "lr": 1e-3, "channels_last": False},
                   "model": {"init": "dcgan"}}
    with pytest.raises(UserError, match="use --seeds"):
        gpu_study.parse_overrides(["train.seed=3"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        gpu_study.parse_overrides(["train.batch_size"])
    with pytest.raises(UserError, match="arm modern sets it"):
        gpu_study.parse_overrides(["train.ema=0.9"], ["course-baseline", "modern"])
    assert gpu_study.parse_overrides(["train.ema=0.9"], ["course-baseline"]) == {
        "train": {"ema": 0.9}}


def test_grid_epochs_keep_the_last_and_spread_the_rest():
    assert standalone.grid_epochs(60, 16) == list(range(0, 61, 4))
    assert standalone.grid_epochs(61, 1) == [61]
    assert standalone.grid_epochs(1, 16) == [0, 1]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # the course's 3 workers
def test_the_course_array_loader_normalises_like_imagefolder():
    image = noise(64, 64, 3)
    expected = T.Compose([T.ToTensor(), T.Normalize(*reference_loop.STATS)])(image)
    pixels = np.asarray(image).transpose(2, 0, 1)[None]
    got, label = reference_loop.ArrayImages(pixels)[0]
    assert label == 0 and torch.equal(got, expected)
    loader = reference_loop.array_loader(np.repeat(pixels, 10, axis=0), 4, torch.device("cpu"))
    assert (len(loader), loader.drop_last) == (2, True)


def _hide(folder: Path, names: tuple[str, ...]) -> Path:
    """A sitecustomize.py that makes every interpreter started with ``folder`` on its PYTHONPATH
    fail to import ``names``: the GPU hour's children (the study, its runs, the throughput
    benchmark) are interpreters of their own."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        f"import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n", encoding="utf-8")
    return folder


@pytest.mark.slow  # ~60 s: 10 tiny runs, the throughput benchmark and the study page
def test_the_gpu_hour_command_returns_at_most_8_files_a_page_reads(tmp_path):
    """benchmarks/gpu_hour.sh on the CPU as on the device (without what the GPU machine lacks): the
    default plan at 1 epoch of 1 step, the throughput part tiny, the deadlines scaled."""
    data, out = write_zip(tmp_path / "cats.zip"), tmp_path / "OUT"
    hidden = _hide(tmp_path / "hide", MISSING_THERE)
    tiny_throughput = ("--device cpu --warmup 1 --steps 1 --repeats 1 --batch-size 4 "
                       "--variants fused --configs fp32 --threads 1")
    proc = subprocess.run(
        ["benchmarks/gpu_hour.sh", "--data", str(data), "--out", str(out), "--budget-s", "60",
         "--stop-s", "300", "--study-end-s", "330", "--end-s", "450",
         "--throughput", tiny_throughput, *TINY[:4], *TINY[4:]],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(hidden)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index("== GPU hour summary"):]
    assert "study: ok" in summary and "throughput: ok" in summary and "total wall time" in summary
    assert "time limit" not in summary and "budget spent" not in summary  # every run finished

    study_arms = gpu_study.default_arms()
    generators = {f"study.generator-{arm}.pt" for arm in study_arms}
    returned = {p.name for p in out.iterdir()}
    assert returned == {"study.tar.gz", "gpu_hour.log", "throughput.json", *generators}
    assert len(returned) <= 8 and f"({len(returned)} of at most 8)" in summary
    assert summary in (out / "gpu_hour.log").read_text(encoding="utf-8")  # the log is all of it

    for name in generators:  # fp16 as stored, float32 as the loaders read it
        path = out / name
        assert path.stat().st_size <= weightsfile.LIMIT == 8 << 20
        stored = torch.load(path, weights_only=True)["state_dict"]
        assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}, name
        _, state = weightsfile.read(path)
        assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}

    info, runs = load_study(studydir.unpack(out / "study.tar.gz", tmp_path / "unpacked"))
    assert {run.name for run in runs} == {f"study-{a}-seed{s}" for a in study_arms
                                          for s in (0, 1, 2)} | {"saturating-course-baseline-seed0"}
    assert info["settings"]["course"] is False
    assert cli.main(["study-page", str(out / "study.tar.gz"), "--out", str(tmp_path / "page")]) in (
        0, None)
    page = (tmp_path / "page" / "study" / "study.html").read_text(encoding="utf-8")
    assert all(f"<h3>{arm}</h3>" in page for arm in study_arms)  # a sample section per generator

    measured = json.loads((out / "throughput.json").read_text(encoding="utf-8"))
    assert measured["machine"]["course_loader"] == "DataLoader over catgan's array (no torchvision)"
    assert [row["loop"] for row in measured["rows"]] == ["reference (course)", "catgan fp32"]
    assert all(row["img_s"] > 0 for row in measured["rows"])


def test_a_gpu_hour_study_past_its_deadline_is_killed_and_the_log_still_comes_back(tmp_path):
    out = tmp_path / "OUT"
    proc = subprocess.run(
        ["benchmarks/gpu_hour.sh", "--data", str(write_zip(tmp_path / "cats.zip", count=8)),
         "--out", str(out), "--budget-s", "0.1", "--stop-s", "0.2", "--study-end-s", "0.3",
         "--end-s", "60", "--throughput", "", "--work", str(tmp_path / "work"), *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ,
                                                                    "PYTHON": sys.executable})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "study: stopped at --study-end-s 0.3" in proc.stdout
    assert "FAILED no study.tar.gz: the study did not pack" in proc.stdout
    assert "throughput: left out (--throughput '')" in proc.stdout
    assert [p.name for p in out.iterdir()] == ["gpu_hour.log"]
    assert (out / "gpu_hour.log").read_text(encoding="utf-8").endswith(
        proc.stdout.splitlines()[-1] + "\n")


def test_the_gpu_hour_refuses_more_files_than_come_back_and_deadlines_out_of_order(tmp_path,
                                                                                    capsys):
    every = ["--arms", *arms.ARMS]  # 7 generators, the archive, the log and throughput.json
    out = tmp_path / "OUT"
    with pytest.raises(SystemExit) as exit_:
        gpu_hour.main(["--data", "z.zip", "--out", str(out), *every])
    assert exit_.value.code == 2 and not out.exists()  # refused before anything ran
    assert f"--arms: {len(arms.ARMS)} arms make {len(arms.ARMS)} generator files" in \
        capsys.readouterr().err
    args, study = gpu_hour.parse_args(["--data", "z.zip", "--out", str(out), "--throughput", "",
                                       "--arms", *list(arms.ARMS)[:6]])
    gpu_hour.check_files(args, study)  # 6 generators, the archive and the log: 8, allowed
    out.mkdir()
    (out / "old.txt").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="1 files already in --out that is 9"):
        gpu_hour.check_files(args, study)

    # Grids per animated run: as many as keep the archive near 14 MiB, unless --frames is given.
    three, five = ["--arms", *list(arms.ARMS)[:3]], ["--arms", *gpu_study.default_arms()]
    assert len(five) == 6  # the course's two arms, modern, modern-ada and r3
    assert [gpu_hour.parse_args(["--data", "z.zip", "--out", str(out), *more])[1].rest[:2]
            for more in (three, [], [*five, "--course"], [*five, "--frames", "5"])] == [
        ["--frames", "16"], ["--frames", "11"], ["--frames", "9"], ["--arms", five[1]]]

    with pytest.raises(SystemExit):  # parity runs are off by default: nothing would be left
        gpu_study.parse_args(["--data", "z.zip", "--out", str(out), "--no-study", "--no-saturating"])
    assert "leave no run to do; add --course" in capsys.readouterr().err

    for bad, flag in ((["--stop-s", "500"], "--stop-s 500: must be above 0 and below --study-end-s"),
                      (["--budget-s", "0"], "--budget-s 0: must be above 0"),
                      (["--stop-s", "10"], "--budget-s 60: must be above 0 and below --stop-s"),
                      (["--", "--stop-s=3"], "--stop-s=3: this command sets it for gpu_study")):
        with pytest.raises(SystemExit):
            gpu_hour.parse_args(["--data", "z.zip", "--out", str(out), *bad])
        assert flag in capsys.readouterr().err, bad
