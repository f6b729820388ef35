"""DVC stage evaluate: SWD, FID/KID when Inception weights exist, D scores, collapse check."""
from pathlib import Path

from catgan.config import flat_numbers, load_params
from catgan.data.preprocess import load_images
from catgan.errors import cli_entry
from catgan.fileio import write_json
from catgan.metrics.evaluate import evaluate
from catgan.model.nets import build
from catgan.tracking.client import open_run
from catgan.training.distributed import select_device
from catgan.training.outputs import load_state_dict, read_run
from catgan.training.seeding import seed_everything


@cli_entry
def main() -> None:
    params = load_params()
    seed_everything(params.eval.seed, params.train.threads)
    device = select_device(params.train.device)
    G, D = build(params.model.variant, params.model.latent_dim, "default",
                 params.model.d_norm)
    G = load_state_dict(G, Path("models/generator.pt")).to(device)
    D = load_state_dict(D, Path("models/discriminator.pt")).to(device)
    images = load_images(Path("data/prepared/images.npy"))
    metrics, notes = evaluate(params, G, D, images, device)
    write_json(Path("metrics/eval.json"), metrics)
    run = read_run(Path("models"))
    tracker = open_run(params.tracking, run["mlflow_run_id"])
    tracker.log_metrics(flat_numbers(metrics, "eval."), step=run["epochs"])
    tracker.set_tags({f"eval.{k}": v for k, v in notes.items()})
    tracker.finish(None, "evaluate")
    swd_avg, floor = metrics["swd"]["swd_avg"], metrics["swd_real_floor"]["swd_avg"]
    print(f"evaluate: SWD x1e3 {swd_avg:.2f} (real-vs-real floor {floor:.2f}), "
          f"D(real) {metrics['scores']['real']:.3f}, D(fake) {metrics['scores']['fake']:.3f}")


if __name__ == "__main__":
    main()
