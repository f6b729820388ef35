"""DVC stage train: train G and D on data/prepared, resuming from the last complete epoch.

Run by ``python -m catgan.training.launch`` (torchrun) with train.nproc processes on each node;
every process trains its share of each batch, and only the main one writes outputs and the MLflow run.
"""
import json
import logging
import time
from pathlib import Path

from catgan.config import load_params, project_root
from catgan.data.preprocess import load_images
from catgan.errors import UserError, cli_entry
from catgan.generate import imagemodel
from catgan.model.nets import format_layer_table, layer_table
from catgan.tracking.client import make_tracker
from catgan.tracking.runmeta import run_tags
from catgan.training import distributed
from catgan.training.loop import checkpoint_dir, train
from catgan.training.outputs import write_train_outputs
from catgan.training.tracker import NullTracker

PREPARED = Path("data/prepared")
log = logging.getLogger(__name__)


@cli_entry
def main() -> None:
    params = load_params()
    dist, device = distributed.from_env(params.train.device)
    if dist.local_world != params.train.nproc:  # per node: the global world is nodes x nproc
        raise UserError(f"train.nproc = {params.train.nproc} but {dist.local_world} process(es) "
                        "started on this node; "
                        f"run `python -m catgan.training.launch --nproc-per-node={params.train.nproc} "
                        "--module stages.train` (dvc repro does) or set train.nproc to match")
    try:
        images = load_images(PREPARED / "images.npy")
        data_hash = json.loads((PREPARED / "manifest.json").read_text())["content_hash"]
        tracker = (make_tracker(params.tracking, run_tags(params, data_hash)) if dist.main
                   else NullTracker())
        ckpt_dir = checkpoint_dir(project_root(), params, data_hash)
        result = train(params, images, data_hash, ckpt_dir, tracker, dist, device)
        if dist.main:
            write(params, result, tracker, ckpt_dir, images.shape[1:])
            log_dataset(params, tracker, data_hash)
            log_generator(params, result, tracker)
        tracker.finish()
    finally:
        distributed.shutdown()


def write(params, result, tracker, ckpt_dir: Path, image_shape: tuple) -> None:
    for name, net, shape in (("generator", result.generator, (params.model.latent_dim, 1, 1)),
                             ("discriminator", result.discriminator, tuple(image_shape))):
        tracker.log_text(format_layer_table(layer_table(net, shape), name), f"layers_{name}.md")
    write_train_outputs(result, ckpt_dir / "grids", models=Path("models"), metrics=Path("metrics"),
                        samples=Path("samples"), variant=params.model.variant,
                        latent_dim=params.model.latent_dim, seed=params.train.seed)


def log_dataset(params, tracker, data_hash: str) -> None:
    d = params.data
    origin = {"kaggle": d.kaggle_dataset, "folder": d.path, "synthetic": "catgan.data.synthetic"}
    tracker.log_dataset(f"{d.source}: {origin[d.source]}", data_hash,
                        {"source": d.source, "origin": origin[d.source],
                         "path": str(PREPARED / "images.npy")})


def log_generator(params, result, tracker) -> None:
    """The generator as an MLflow model, "generator": latents in, uint8 images out."""
    if tracker.run_id is None:
        return
    started = time.perf_counter()
    m = params.model
    model = imagemodel.from_state_dict(m.variant, m.latent_dim, result.generator.state_dict())
    # A batch of 2: torch.export keeps a batch of 1 fixed, and the model must take any batch.
    tracker.log_model(model, "generator", imagemodel.signature(m.latent_dim),
                      imagemodel.latents(2, m.latent_dim, seed=0).numpy())
    log.info("logged the generator as an MLflow model in %.1f s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
