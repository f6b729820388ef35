"""DVC stage train: train G and D on data/prepared, resuming from the last complete epoch."""
import json
from pathlib import Path

from catgan.config import load_params, project_root
from catgan.data.preprocess import load_images
from catgan.errors import cli_entry
from catgan.models import format_layer_table, layer_table
from catgan.outputs import write_train_outputs
from catgan.tracking import make_tracker
from catgan.train import checkpoint_dir, train

PREPARED = Path("data/prepared")


@cli_entry
def main() -> None:
    params = load_params()
    images = load_images(PREPARED / "images.npy")
    data_hash = json.loads((PREPARED / "manifest.json").read_text())["content_hash"]
    tracker = make_tracker(params.tracking)
    ckpt_dir = checkpoint_dir(project_root(), params, data_hash)
    result = train(params, images, data_hash, ckpt_dir, tracker)
    for name, net, shape in (("generator", result.generator, (params.model.latent_dim, 1, 1)),
                             ("discriminator", result.discriminator, tuple(images.shape[1:]))):
        tracker.log_text(format_layer_table(layer_table(net, shape), name), f"layers_{name}.md")
    write_train_outputs(result, ckpt_dir / "grids", models=Path("models"), metrics=Path("metrics"),
                        samples=Path("samples"), variant=params.model.variant,
                        seed=params.train.seed)
    tracker.finish()


if __name__ == "__main__":
    main()
