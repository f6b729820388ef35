"""One entry script per DVC stage, run as ``python -m stages.<name>`` (see dvc.yaml)."""
