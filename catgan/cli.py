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
    p.add_argument("--register", action="store_true",
                   help="also register each variant's best run (lowest eval.swd.swd_avg, among "
                        "finished MLflow runs with a logged generator) as catgan-<variant>, alias "
                        "best: catgan sample models:/catgan-fused@best draws from it")
    p.set_defaults(run=_compare)


def _tracking(args: argparse.Namespace) -> tuple[str, str]:
    from catgan.config import TrackingConfig, load_params
    from catgan.tracking.store import tracking_uri

    if args.tracking_uri and args.experiment:
        return args.tracking_uri, args.experiment
    root = args.repo.resolve()
    cfg = load_params(root / "params.yaml").tracking if (root / "params.yaml").is_file() \
        else TrackingConfig()
    return args.tracking_uri or tracking_uri(cfg, root), args.experiment or cfg.experiment


def _compare(args: argparse.Namespace) -> None:
    from catgan.study.compare import from_dvc, from_mlflow, render, stats

    if args.source == "dvc":
        records = from_dvc.collect(args.repo)
    else:
        records = from_mlflow.collect(*_tracking(args))
    summary = stats.summarize(records, confidence=args.confidence, metrics=args.metrics,
                              groups=args.variants)
    print(render.render_text(summary))
    paths = render.save(summary, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    if args.register:
        from catgan.study.compare.register import register_best

        print("\n".join(register_best(*_tracking(args))))


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="new images from a trained generator: PNGs, a grid, a latent walk",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draws images from a trained generator, on the CPU.\n\n"
                    "Like training, it normalises with the batch's statistics (BatchNorm as in\n"
                    "train mode; running statistics unused), so each image depends on the whole\n"
                    "batch it is drawn in: the same source, --seed and -n give the same pixels,\n"
                    "another -n gives other images.",
        epilog="SOURCE is one of:\n"
               "  models                       a folder holding generator.pt and run.json "
               "(default: the workspace's)\n"
               "  NAME                         a DVC experiment, read from the DVC cache; the "
               "workspace is not touched\n"
               "  RUN_ID                       an MLflow run (its logged 'generator' model)\n"
               "  models:/catgan-fused@best    a registered model, by alias or version "
               "(catgan compare --register)\n"
               "  FILE.pt                      a generator file of the GPU study "
               "(<archive>.generator-<arm>.pt; --nearest needs --data)")
    p.add_argument("source", nargs="?", default="models", help="where the generator is (below)")
    p.add_argument("-n", "--num", type=int, default=64,
                   help="images to draw, or latent walks with --interpolate (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (default: 0)")
    p.add_argument("--out", type=Path, default=Path("sampled"),
                   help="output folder (default: sampled)")
    p.add_argument("--grid", action="store_true",
                   help="one sheet, grid.png, instead of one PNG per image")
    p.add_argument("--interpolate", type=int, metavar="K",
                   help="also write interpolation.gif: K steps of spherical interpolation between "
                        "two seeded latents, for each of -n walks (8 a row)")
    p.add_argument("--fps", type=float, default=8, help="frames per second of the GIF (default: 8)")
    p.add_argument("--nearest", action="store_true",
                   help="also write nearest.png: each image beside the training image nearest to "
                        "it in pixel L2, the check that a GAN did not memorise its data")
    p.add_argument("--data", type=Path, default=None,
                   help="training images for --nearest (default: a DVC experiment's own "
                        "data/prepared/images.npy from the cache, else the one in --repo)")
    p.add_argument("--repo", type=Path, default=Path("."),
                   help="the git+DVC project (default: the current folder)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for run ids and registered models (default: as "
                        "catgan compare)")
    p.set_defaults(run=_sample, experiment=None)


def _sample(args: argparse.Namespace) -> None:
    from catgan.data.preprocess import load_images
    from catgan.errors import UserError
    from catgan.generate import sample
    from catgan.generate.trained import open_trained

    if args.num < 1 or (args.interpolate is not None and args.interpolate < 2):
        raise UserError("-n must be at least 1 and --interpolate at least 2 (its two endpoints)")
    trained = open_trained(args.source, args.repo.resolve(), lambda: _tracking(args)[0])
    print(f"sampling {trained.where}: {trained.variant}, latent size {trained.latent_dim}, seed "
          f"{args.seed}, batch statistics over {args.num} image(s)")
    images = sample.draw(trained, args.num, args.seed)
    written = [sample.write_grid(images, args.out / "grid.png")] if args.grid \
        else sample.write_pngs(images, args.out)
    if args.interpolate:
        frames = sample.interpolate(trained, args.num, args.interpolate, args.seed)
        written.append(sample.write_gif(frames, args.out / "interpolation.gif", args.fps))
    if args.nearest:
        if args.data is None and trained.training_data:
            train, data = trained.training_data()
        else:
            data = args.data or args.repo / "data/prepared/images.npy"
            train = load_images(data)
        path, summary = sample.write_nearest(images, train, data, args.out / "nearest.png")
        written.append(path)
        print(summary)
    shown = written if len(written) <= 4 else [*written[:2], "...", written[-1]]
    print(f"wrote {len(written)} file(s): " + ", ".join(str(p) for p in shown))


def _add_study(sub: argparse._SubParsersAction) -> None:
    from catgan.study import run as study

    # Its own parser reads the rest of the command line (catgan/study/run.py), --help included.
    p = sub.add_parser("study", help="variants x seeds through DVC's queue, then the study page",
                       add_help=False)
    p.set_defaults(run=study.main)


def _add_arm(sub: argparse._SubParsersAction) -> None:
    from catgan.study import arms

    p = sub.add_parser("arm", help="an arm's params overrides as -S arguments: "
                       "dvc exp run -n modern $(catgan arm modern)")
    p.add_argument("name", help=f"one of: {', '.join(arms.ARMS)}")
    p.set_defaults(run=lambda args: arms.main([args.name]))


def _add_study_page(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study-page", help="the study page of a study folder or a GPU study archive",
                       description="Builds study.html (and figures/) from a study folder, or from "
                                   "the study.tar.gz that benchmarks/gpu_study.py wrote (with the "
                                   "generator files beside it, <archive>.generator-*.pt).")
    p.add_argument("source", type=Path, help="a study folder (holding study.json) or a .tar.gz")
    p.add_argument("--out", type=Path, default=None,
                   help="where an archive is unpacked (default: studies/<archive name>)")
    p.set_defaults(run=_study_page)


def _study_page(args: argparse.Namespace) -> None:
    from catgan.study import folder as studydir
    from catgan.study import page as studypage

    folder = args.source
    if folder.is_file():
        folder = studydir.unpack(folder, args.out or Path("studies") / studydir.archive_stem(folder))
    studypage.publish(folder)


def _add_server(sub: argparse._SubParsersAction) -> None:
    # Its own parser reads the rest of the command line (catgan/tracking/server.py), --help included.
    p = sub.add_parser("server", help="the team's MLflow server: start, stop, add-user NAME",
                       add_help=False)
    p.set_defaults(run=_server)


def _server(argv: list[str]) -> None:
    from catgan.tracking import server

    server.main(argv, prog="catgan server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catgan", description="catgan: DCGAN cat faces, "
                                     "baseline vs fused, reproducibly")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compare(sub)
    _add_sample(sub)
    _add_study(sub)
    _add_arm(sub)
    _add_study_page(sub)
    _add_server(sub)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in ("study", "server"):
        args.run(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    else:
        args.run(args)
    return 0
