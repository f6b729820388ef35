"""The ``catgan`` command: one subcommand per task (``catgan compare``, ...)."""
from __future__ import annotations

import argparse
from pathlib import Path

from catgan.errors import cli_entry


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two model variants over seeds",
                       description="Mean and t interval per variant and metric over seeds, the "
                                   "difference with a Welch t interval, and a verdict where the "
                                   "metric has a better side. Writes compare.json, .md and .png.")
    p.add_argument("--from", dest="source", choices=("dvc", "mlflow"), default="dvc",
                   help="where the runs are: DVC experiments (default) or an MLflow experiment")
    p.add_argument("--repo", type=Path, default=Path("."),
                   help="the git+DVC project (default: the current folder)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else tracking.uri "
                        "in params.yaml, else sqlite mlflow.db at the project root)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: tracking.experiment, 'catgan')")
    p.add_argument("--out", type=Path, default=Path("compare"),
                   help="output folder (default: compare)")
    p.add_argument("--metrics", nargs="+", metavar="PATTERN",
                   help="only metrics matching these shell patterns, e.g. 'eval.swd.*'")
    p.add_argument("--variants", nargs=2, metavar=("FIRST", "SECOND"),
                   help="the two variants to compare when runs hold more (default: baseline first)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default: 0.95)")
    p.set_defaults(run=_compare)


def _tracking(args: argparse.Namespace) -> tuple[str, str]:
    from catgan.config import TrackingConfig, load_params
    from catgan.mlflowstore import tracking_uri

    if args.tracking_uri and args.experiment:
        return args.tracking_uri, args.experiment
    root = args.repo.resolve()
    cfg = load_params(root / "params.yaml").tracking if (root / "params.yaml").is_file() \
        else TrackingConfig()
    return args.tracking_uri or tracking_uri(cfg, root), args.experiment or cfg.experiment


def _compare(args: argparse.Namespace) -> None:
    from catgan.compare import from_dvc, from_mlflow, render, stats

    if args.source == "dvc":
        records = from_dvc.collect(args.repo)
    else:
        records = from_mlflow.collect(*_tracking(args))
    summary = stats.summarize(records, confidence=args.confidence, metrics=args.metrics,
                              variants=args.variants)
    print(render.render_text(summary))
    paths = render.save(summary, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))


def _add_study(sub: argparse._SubParsersAction) -> None:
    from catgan import study

    # Its own parser reads the rest of the command line (catgan/study.py), --help included.
    p = sub.add_parser("study", help="variants x seeds through DVC's queue, then the study page",
                       add_help=False)
    p.set_defaults(run=study.main)


def _add_study_page(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study-page", help="the study page of a study folder or a GPU study archive",
                       description="Builds study.html (and figures/) from a study folder, or from "
                                   "the study.tar.gz that benchmarks/gpu_study.py wrote.")
    p.add_argument("source", type=Path, help="a study folder (holding study.json) or a .tar.gz")
    p.add_argument("--out", type=Path, default=None,
                   help="where an archive is unpacked (default: studies/<archive name>)")
    p.set_defaults(run=_study_page)


def _study_page(args: argparse.Namespace) -> None:
    from catgan import studydir, studypage

    folder = args.source
    if folder.is_file():
        name = folder.name.removesuffix(".gz").removesuffix(".tar")
        folder = studydir.unpack(folder, args.out or Path("studies") / name)
    studypage.publish(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catgan", description="catgan: DCGAN cat faces, "
                                     "baseline vs fused, reproducibly")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compare(sub)
    _add_study(sub)
    _add_study_page(sub)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "study":
        args.run(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    else:
        args.run(args)
    return 0
