"""DVC stage fetch: bring the raw images (Kaggle, a local folder or zip, or synthetic) to data/raw."""
from pathlib import Path

from catgan.config import load_params
from catgan.data.sources import fetch
from catgan.errors import cli_entry


@cli_entry
def main() -> None:
    d = load_params().data
    fetch(d.source, Path("data/raw"), kaggle_dataset=d.kaggle_dataset, path=d.path,
          synthetic_count=d.synthetic_count, seed=d.seed, kaggle_timeout_s=d.kaggle_timeout_s)


if __name__ == "__main__":
    main()
