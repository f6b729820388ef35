"""DVC stage preprocess: decode, crop and deduplicate data/raw into one uint8 array."""
from pathlib import Path

from catgan.config import load_params
from catgan.data.preprocess import preprocess
from catgan.errors import cli_entry


@cli_entry
def main() -> None:
    d = load_params().data
    manifest = preprocess(Path("data/raw"), Path("data/prepared"), image_size=d.image_size,
                          min_size=d.min_size, dedup=d.dedup, max_bad_fraction=d.max_bad_fraction,
                          workers=d.workers)
    print(f"preprocess: {manifest['files_found']} files found, {manifest['files_used']} images used")


if __name__ == "__main__":
    main()
