"""A study folder: everything a study page needs, whichever machine trained the runs.

    <study>/study.json             format, name, device, data (content_hash, images), settings,
                                   parent run, provenance (catgan/study/provenance.py: code, versions,
                                   device, command line, wall time)
    <study>/runs/<run>/run.json    kind, arm, overrides (catgan/study/arms.py), variant, seed, g_loss,
                                   epochs, steps, batch_size, images_seen, wall_s, device, eval
                                   (the evaluate stage's metrics)
    <study>/runs/<run>/history.csv one row per epoch (train.HISTORY_COLUMNS; blank where not measured)
    <study>/runs/<run>/steps.csv   one row every log_every steps (step, epoch, train.COLUMNS)
    <study>/runs/<run>/grids/epoch_NNN.png   the fixed-latent grid after each epoch (0 = untrained)
    <study>/weights/generator-<arm>.pt   optional: the lowest-SWD study run's generator of each
                                   arm, in fp16 (catgan/generate/weightsfile.py)

``kind`` is ``study`` (an arm x seed run of the comparison), ``saturating`` (the same training
with the saturating G loss, for the loss question) or ``course`` (the course's own loop, for parity).
The local study command exports MLflow runs into this layout; the GPU study writes it directly,
packs all but the weights into one archive and writes each weights file beside it, as
``<archive stem>.generator-<arm>.pt``: ``unpack`` puts them back under weights/.

Format 1 (before provenance and weights) and 2 (before arms: runs name only their variant, and
weights files their variant) are still read: a run without an arm is its variant's course arm,
``course-<variant>``. A format 1 page says what it lacks.
"""
from __future__ import annotations

import csv
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from catgan.errors import UserError
from catgan.fileio import atomic_dir, write_json
from catgan.study.arms import of_run

KINDS = ("study", "saturating", "course")
FORMAT = 3
READABLE = (1, 2, 3)
WEIGHTS = "weights"


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


def write_run_meta(run_dir: Path, meta: dict) -> None:
    if meta.get("kind") not in KINDS:
        raise ValueError(f"run kind must be one of {KINDS}, got {meta.get('kind')!r}")
    write_json(run_dir / "run.json", meta)


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
        run.meta["arm"] = of_run(run.meta)
    runs.sort(key=lambda r: (KINDS.index(r.meta["kind"]), r.meta["arm"], r.meta["seed"]))
    return info, runs


def weights_name(arm: str) -> str:
    return f"generator-{arm}.pt"


def weights(root: Path) -> dict[str, Path]:
    """Arm (a variant, before format 3) -> its generator file under ``root/weights``; empty when
    none came with the study."""
    return {p.name.removeprefix("generator-").removesuffix(".pt"): p
            for p in sorted((root / WEIGHTS).glob(weights_name("*")))}


def archive_stem(archive: Path) -> str:
    """``study`` for study.tar.gz: the name that the folder and the weights files beside share."""
    return Path(archive).name.removesuffix(".gz").removesuffix(".tar")


def weights_beside(archive: Path) -> dict[str, Path]:
    """Arm -> the generator file written beside ``archive`` (``<stem>.generator-<arm>.pt``)."""
    prefix = f"{archive_stem(archive)}."
    return {p.name.removeprefix(prefix + "generator-").removesuffix(".pt"): p
            for p in sorted(Path(archive).parent.glob(prefix + weights_name("*")))}


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
            for variant, path in weights_beside(archive).items():
                (tmp / WEIGHTS).mkdir(exist_ok=True)
                shutil.copyfile(path, tmp / WEIGHTS / weights_name(variant))
    except FileNotFoundError:
        raise UserError(f"{archive}: not found; pass the study.tar.gz that gpu_study wrote") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"{archive}: cannot be unpacked ({err}); copy it again, or use an archive "
                        "written by benchmarks/gpu_study.py") from None
    return target
