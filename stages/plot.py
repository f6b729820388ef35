"""DVC stage plot: the course's figures, the samples video and report/index.html for one run."""
import shutil
from pathlib import Path

import numpy as np
import torch

from catgan.config import load_params
from catgan.data.preprocess import load_images
from catgan.errors import cli_entry
from catgan.images import grid_image, save_png
from catgan.model.nets import build, layer_table
from catgan.report.plots import plot_losses, plot_scores, read_rows, write_video
from catgan.report.runpage import IMAGE_KEYS, build_report
from catgan.tracking.client import open_run
from catgan.training.outputs import read_json, read_run

OUT = Path("report")


@cli_entry
def main() -> None:
    params = load_params()
    history = read_rows(Path("metrics/history.csv"), ("epoch", "loss_d", "loss_g"))
    steps = read_rows(Path("metrics/steps.csv"))
    frames = sorted(Path("samples").glob("epoch_*.png"))
    title = f"{params.model.variant}, seed {params.train.seed}, {len(history)} epochs"
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()

    plot_losses(history, steps, OUT / "losses.png", title=f"Losses: {title}", dpi=params.plot.dpi)
    plot_scores(history, steps, OUT / "scores.png", title=f"Scores: {title}", dpi=params.plot.dpi)
    images = load_images(Path("data/prepared/images.npy"))
    pick = np.sort(np.random.default_rng(0).choice(len(images), min(64, len(images)), replace=False))
    save_png(grid_image(torch.from_numpy(np.ascontiguousarray(images[pick]))), OUT / "dataset.png")
    shutil.copy2(frames[0], OUT / "epoch0.png")
    shutil.copy2(frames[-1], OUT / "final.png")
    write_video(frames, OUT / "samples.mp4", fps=params.plot.fps)

    G, D = build(params.model.variant, params.model.latent_dim, "default",
                 params.model.d_norm)
    tables = {"Generator": layer_table(G, (params.model.latent_dim, 1, 1)),
              "Discriminator": layer_table(D, tuple(images.shape[1:]))}
    metrics = {name: read_json(Path(f"metrics/{name}.json"), stage)
               for name, stage in (("train", "train"), ("eval", "evaluate"))}
    figures = {key: OUT / f"{key}.png" for key in IMAGE_KEYS}
    build_report(OUT / "index.html", title=f"catgan: {title}", images=figures,
                 video=OUT / "samples.mp4", layer_tables=tables, metrics=metrics)

    run = read_run(Path("models"))
    tracker = open_run(params.tracking, run["mlflow_run_id"])
    for path in sorted(OUT.iterdir()):
        tracker.log_artifact(path, "report")
    tracker.finish(None, "plot")
    print(f"plot: report at {OUT / 'index.html'}")


if __name__ == "__main__":
    main()
