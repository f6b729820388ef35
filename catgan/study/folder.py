"""A study folder: all a study page needs, whichever machine trained the runs; written, read and
packed into one archive here.

    <study>/study.json             format, name, device, data (content_hash, images), settings,
                                   parent run, provenance (catgan/study/provenance.py: code, versions,
                                   device, command line, wall time)
    <study>/runs/<run>/run.json    kind, arm, overrides (catgan/study/arms.py), variant, seed, loss
                                   (train.loss), epochs, steps, batch_size, images_seen, wall_s,
                                   device, eval (the evaluate stage's metrics): ``run_meta``
    <study>/runs/<run>/history.csv one row per epoch (train.HISTORY_COLUMNS; blank where not measured)
    <study>/runs/<run>/steps.csv   one row every log_every steps (step, epoch, train.COLUMNS)
    <study>/runs/<run>/grids/epoch_NNN.png   the fixed-latent grid after each epoch (0 = untrained)
    <study>/runs/<run>/generator.pt          optional: the run's generator in fp16, never archived
    <study>/weights/generator-<arm>.pt   optional: the lowest-SWD study run's generator of each
                                   arm, in fp16 (catgan/generate/weightsfile.py)

``kind`` is ``study`` (an arm x seed run of the comparison), ``saturating`` (the same training
with the saturating G loss, for the loss question) or ``course`` (the course's own loop, for parity).
catgan/study/export.py writes it from MLflow, catgan/study/standalone.py (the GPU study) directly,
then packs all but the generators into one archive (``pack``) with each arm's best generator beside
it, ``<archive stem>.generator-<arm>.pt`` (``best_generators``); ``unpack`` puts them under weights/.

Older formats still load: 1 (no provenance or weights; its page says so), 2 (no arms: a run is its
variant's course arm) and 3 (G's loss as ``g_loss``, a relativistic one in the arm's overrides).
"""
from __future__ import annotations

import csv
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from catgan.errors import UserError
from catgan.fileio import atomic_dir, atomic_path, write_json
from catgan.generate import weightsfile
from catgan.study import arms
from catgan.training.outputs import COLUMNS, HISTORY_COLUMNS, write_csv

KINDS = ("study", "saturating", "course")
FORMAT = 4
READABLE = (1, 2, 3, 4)
WEIGHTS = "weights"
GENERATOR = "generator.pt"
ARCHIVE_LIMIT = 16 << 20  # the most one file may have to come back from the device machine


@dataclass
class Run:
    path: Path
    meta: dict
    history: list[dict]
    steps: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def grids(self) -> list[Path]:
        return sorted((self.path / "grids").glob("epoch_*.png"))


def read_csv(path: Path) -> list[dict]:
    """Rows of numbers; an empty cell (a quality metric not measured that epoch) becomes None."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(fh)]


def write_study(root: Path, info: dict) -> None:
    write_json(root / "study.json", {"format": FORMAT, **info})


def run_meta(kind: str, arm: str, seed: int, *, loss: str, epochs: int, steps: int, batch_size: int,
             images_seen: int, wall_s: float, device: str, eval: dict, **more) -> dict:
    """run.json's contents: what every producer records, then ``more`` of its own."""
    if kind not in KINDS:
        raise ValueError(f"run kind must be one of {KINDS}, got {kind!r}")
    return {"kind": kind, "arm": arm, "overrides": arms.get(arm).overrides,
            "variant": arms.get(arm).variant, "seed": seed, "loss": loss, "epochs": epochs,
            "steps": steps, "batch_size": batch_size, "images_seen": images_seen, "wall_s": wall_s,
            "device": device, "eval": eval, **more}


def write_run(run_dir: Path, meta: dict, history: list[dict], steps: list[dict],
              grids: list[Path] = (), palette: bool = False, generator: tuple | None = None) -> None:
    """The run folder, all of it at once: a killed run leaves none, so a rerun redoes it.
    ``grids``: epoch_NNN.png files, copied, or with ``palette`` cut to 256 colours (a lossless 8x8
    grid is ~0.6 MB); ``generator``: (module, info) for catgan.generate.weightsfile."""
    with atomic_dir(Path(run_dir)) as tmp:
        if generator:
            weightsfile.write(tmp / GENERATOR, *generator)
        write_csv(history, tmp / "history.csv", HISTORY_COLUMNS)
        write_csv(steps, tmp / "steps.csv", ("step", "epoch", *COLUMNS))
        for src in grids:
            (tmp / "grids").mkdir(exist_ok=True)
            if not palette:
                shutil.copyfile(src, tmp / "grids" / src.name)
                continue
            with Image.open(src) as grid:
                small = grid.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
            small.save(tmp / "grids" / src.name, format="PNG", optimize=True)
        write_json(tmp / "run.json", meta)


def load_study(root: Path) -> tuple[dict, list[Run]]:
    """study.json and every run under ``root/runs``, sorted by kind, arm and seed; each run's meta
    has its ``arm`` (``course-<variant>`` for runs from before arms)."""
    path = root / "study.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `catgan study` (or benchmarks/gpu_study.sh) "
                        "first, or pass the folder that holds study.json") from None
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable study file ({err}); run the study again") from None
    if info.get("format") not in READABLE:
        raise UserError(f"{path}: study format {info.get('format')!r}, expected one of "
                        f"{', '.join(map(str, READABLE))}; rebuild it with this version of catgan")
    runs = [Run(run, json.loads((run / "run.json").read_text(encoding="utf-8")),
                read_csv(run / "history.csv"), read_csv(run / "steps.csv"))
            for run in sorted(p.parent for p in (root / "runs").glob("*/run.json"))]
    for run in runs:
        run.meta["arm"] = arms.of_run(run.meta)
        if "loss" not in run.meta:  # before format 4: g_loss, or the arm's relativistic loss
            run.meta["loss"] = run.meta.get("overrides", {}).get("train.loss") or run.meta.get("g_loss")
    runs.sort(key=lambda r: (KINDS.index(r.meta["kind"]), r.meta["arm"], r.meta["seed"]))
    return info, runs


def weights_name(arm: str) -> str:
    return f"generator-{arm}.pt"


def weights(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Arm (a variant, before format 3) -> its file ``<prefix>generator-<arm>.pt`` in ``folder``: a
    study's weights/ (none when no generator came with it), or beside an archive (prefix
    ``<archive stem>.``)."""
    return {p.name.removeprefix(prefix + "generator-").removesuffix(".pt"): p
            for p in sorted(folder.glob(prefix + weights_name("*")))}


def archive_stem(archive: Path) -> str:
    """``study`` for study.tar.gz: the name that the folder and the weights files beside share."""
    return Path(archive).name.removesuffix(".gz").removesuffix(".tar")


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a study archive into ``dest/study`` (replacing it), with the generator files found
    beside the archive under its weights/; returns that folder.

    Members must lie inside ``study/``; tarfile's ``data`` filter refuses links out, devices etc."""
    archive, dest = Path(archive), Path(dest)
    target = dest / "study"
    try:
        with tarfile.open(archive, "r:*") as tar, atomic_dir(target) as tmp:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or parts[:1] != ("study",):
                    raise UserError(f"{archive}: member {member.name!r} lies outside the archive's "
                                    "study/ folder; refusing to unpack it. Use an archive written "
                                    "by benchmarks/gpu_study.py")
            tar.extractall(tmp, filter="data")
            if not (tmp / "study" / "study.json").is_file():
                raise UserError(f"{archive}: holds no study/study.json; not a study archive")
            for entry in (tmp / "study").iterdir():
                entry.rename(tmp / entry.name)
            (tmp / "study").rmdir()
            for arm, path in weights(archive.parent, f"{archive_stem(archive)}.").items():
                (tmp / WEIGHTS).mkdir(exist_ok=True)
                shutil.copyfile(path, tmp / WEIGHTS / weights_name(arm))
    except FileNotFoundError:
        raise UserError(f"{archive}: not found; pass the study.tar.gz that gpu_study wrote") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"{archive}: cannot be unpacked ({err}); copy it again, or use an archive "
                        "written by benchmarks/gpu_study.py") from None
    return target


def pack(study: Path, archive: Path) -> int:
    """``study`` (study.json and the finished run folders) as one .tar.gz, without the generators
    (files of their own beside it); returns its size."""
    def visible(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = PurePosixPath(info.name).parts
        hidden = any(part.startswith(".") for part in parts) or parts[-1] == GENERATOR \
            or parts[1:2] == (WEIGHTS,)
        return None if hidden else info

    with atomic_path(archive, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(study, arcname="study", filter=visible)
    size = archive.stat().st_size
    if size > ARCHIVE_LIMIT:
        raise UserError(f"{archive}: {size / 2**20:.1f} MiB, above the {ARCHIVE_LIMIT >> 20} MiB "
                        "a file may have to come back from the device machine; lower --frames "
                        "(grids kept per animated run) and run again: finished runs are skipped")
    return size


def best_generators(study: Path, out: Path, stem: str) -> tuple[list[Path], list[str]]:
    """Each arm's lowest-SWD study run's generator into ``study/weights/`` and beside the
    archive (``out/<stem>.generator-<arm>.pt``); returns the files written and the problems."""
    best: dict[str, tuple[float, Path]] = {}
    for run_json in sorted((study / "runs").glob("study-*/run.json")):
        meta = json.loads(run_json.read_text(encoding="utf-8"))
        swd, weights = meta["eval"]["swd"]["swd_avg"], run_json.parent / GENERATOR
        arm = arms.of_run(meta)
        if weights.is_file() and swd < best.get(arm, (float("inf"), None))[0]:
            best[arm] = (swd, weights)
    written, problems = [], []
    for arm, (_, weights) in sorted(best.items()):
        size = weights.stat().st_size
        if size > weightsfile.LIMIT:
            problems.append(f"{weights}: {size / 2**20:.1f} MiB, above the "
                            f"{weightsfile.LIMIT >> 20} MiB a weights file may have; not returned")
            continue
        for dest in (study / WEIGHTS / weights_name(arm), out / f"{stem}.{weights_name(arm)}"):
            with atomic_path(dest, suffix=".pt") as tmp:
                shutil.copyfile(weights, tmp)
        written.append(dest)
    return written, problems
