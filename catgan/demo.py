"""``make demo``: the whole study on the embedded synthetic cats, as two DVC experiments.

The committed params.yaml describes the real study and stays untouched: the demo's settings are
``-S`` overrides of temp experiments. Re-running it replaces the two experiments, and DVC's run
cache restores every stage whose code, data and params did not change.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from catgan.config import VARIANTS, check_settable, parse_params
from catgan.errors import UserError, cli_entry
from catgan.study.compare import from_dvc, render, stats
from catgan.study.dvccli import dvc
from catgan.study.table import align

# Few images, a small batch and many steps: on 2 CPU cores this is what makes the samples look
# like the synthetic cats within minutes.
SETTINGS = {
    "data.source": "synthetic",
    "data.synthetic_count": 512,
    "train.epochs": 10,
    "train.batch_size": 16,
    "model.init": "dcgan",
    "eval.num_samples": 256,
    "eval.kid_subset_size": 128,
}


SHOWN_PARAMS = ("model.variant", "train.seed")
SHOWN_METRICS = ("train.loss_d", "train.loss_g", "train.real_score", "train.fake_score",
                 "eval.swd.swd_avg", "eval.swd_real_floor.swd_avg", "eval.diversity.diversity_ratio")


COMPARED = ["eval.swd.*", "eval.diversity.diversity_ratio", "eval.scores.*"]


def exp_name(variant: str) -> str:
    return f"demo-{variant}"


def settings(argv: list[str] | None = None) -> dict[str, object]:
    """The demo's overrides, with ``--epochs`` and any ``-S key=value`` of the user's on top."""
    parser = argparse.ArgumentParser(prog="python -m catgan.demo", description=__doc__)
    parser.add_argument("--epochs", type=int, default=SETTINGS["train.epochs"],
                        help="epochs per variant (default %(default)s)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one more params.yaml override, as for `dvc exp run -S`")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    chosen: dict[str, object] = {**SETTINGS, "train.epochs": args.epochs}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"-S {item!r}: expected KEY=VALUE, for example -S train.batch_size=8")
        if key == "model.variant":
            raise UserError("-S model.variant: the demo runs every variant; drop this override")
        chosen[key] = value
    return chosen


def check(chosen: dict[str, object]) -> None:
    """Apply the overrides to a copy of params.yaml as ``dvc exp run -S`` will (DVC's own Hydra
    parser), and load it with the stages' params check: a bad value fails here, in one line,
    before the previous demo experiments are removed."""
    import yaml
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    check_settable(chosen)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile("params.yaml", copy)
        for key, value in chosen.items():
            try:
                apply_overrides(copy, [f"{key}={value}"])
            except DvcException as err:
                cause = str(err.__cause__ or err).strip().splitlines()[0]
                raise UserError(f"-S {key}={value}: DVC cannot parse it ({cause}); write it as "
                                "`dvc exp run -S` takes it (Hydra override syntax)") from None
        parse_params(yaml.safe_load(copy.read_text(encoding="utf-8")),
                     source="params.yaml with the demo's -S overrides")


def run_experiments(chosen: dict[str, object]) -> None:
    existing = {e.name for e in from_dvc.exp_show(Path.cwd())}
    stale = [exp_name(v) for v in VARIANTS if exp_name(v) in existing]
    if stale:
        dvc("exp", "remove", *stale)
    overrides = [arg for key, value in chosen.items() for arg in ("-S", f"{key}={value}")]
    for variant in VARIANTS:
        print(f"\n== demo: {variant} ==", flush=True)
        dvc("exp", "run", "--temp", "--name", exp_name(variant), *overrides,
            "-S", f"model.variant={variant}")


def exp_table(exps: list[from_dvc.Experiment]) -> str:
    """The demo experiments as ``dvc exp show`` lists them, cut to the columns that tell the story."""
    head = ["Experiment", *SHOWN_PARAMS, *(m.split(".", 1)[1] for m in SHOWN_METRICS)]
    rows = [[e.name, *(str(e.params.get(k, "")) for k in SHOWN_PARAMS),
             *(f"{e.metrics[k]:.4g}" if k in e.metrics else "" for k in SHOWN_METRICS)] for e in exps]
    return align([head, *rows])


def report_paths() -> dict[str, Path]:
    """Each demo run's report, as logged to MLflow: a plain file under mlartifacts/."""
    from catgan.config import TrackingConfig
    from catgan.tracking.store import open_client, tracking_uri

    client = open_client(tracking_uri(TrackingConfig()), must_exist=True)
    exp = client.get_experiment_by_name(TrackingConfig().experiment)
    found = {}
    for variant in VARIANTS:
        runs = client.search_runs([exp.experiment_id] if exp else [],
                                  f"tags.dvc_exp_name = '{exp_name(variant)}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            uri = runs[0].info.artifact_uri + "/report/index.html"
            found[variant] = Path(urlparse(uri).path)
    return found


@cli_entry
def main(argv: list[str] | None = None) -> None:
    chosen = settings(argv)
    check(chosen)
    start = time.time()
    run_experiments(chosen)
    names = [exp_name(v) for v in VARIANTS]
    exps = [e for e in from_dvc.exp_show(Path.cwd(), all_commits=True) if e.name in names]
    print("\n== dvc exp show (selected columns) ==", flush=True)
    print(exp_table(exps))
    print("\n== dvc metrics diff " + " ".join(names) + " ==", flush=True)
    sys.stdout.write(dvc("metrics", "diff", *names, capture=True))
    summary = stats.summarize(from_dvc.records(exps, "demo experiments"), metrics=COMPARED)
    print("\n== catgan compare (one seed each: no interval yet) ==")
    print(render.render_text(summary))
    render.save(summary, Path("compare"))
    print("\n== reports ==")
    for variant, path in report_paths().items():
        print(f"{variant}: {path}")
    print(f"\ndemo finished in {time.time() - start:.0f} s")
    print("Browse every run in the MLflow UI: make ui   (http://127.0.0.1:5000)")
    print("Three seeds per variant, one page: catgan study (docs/study.md)")


if __name__ == "__main__":
    main()
