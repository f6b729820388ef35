"""Each variant's best run in the MLflow model registry: ``catgan-<variant>``, alias ``best``."""
from __future__ import annotations

import math

from catgan.errors import UserError
from catgan.generate.trained import MODEL_PATH, has_model
from catgan.tracking.store import finished_runs

BEST_BY = "eval.swd.swd_avg"  # lower is better: the distance to the real images
ALIAS = "best"


def register_best(uri: str, experiment: str) -> list[str]:
    """Point ``catgan-<variant>@best`` at the finished run with the lowest ``BEST_BY`` that logged
    a generator, one per variant; returns one line per variant saying which run and why.

    A run registered before keeps its version, so registering again changes nothing.
    """
    client, runs = finished_runs(uri, experiment)
    by_variant: dict[str, list] = {}
    for run in runs:
        value = run.data.metrics.get(BEST_BY)
        variant = run.data.params.get("model.variant")
        if variant and value is not None and math.isfinite(value) and has_model(client, run.info.run_id):
            by_variant.setdefault(variant, []).append(run)
    if not by_variant:
        raise UserError(f"MLflow experiment '{experiment}' has no finished run with {BEST_BY} and a "
                        f"logged '{MODEL_PATH}' model to register; run the pipeline with "
                        "tracking.enabled: true")
    return [_register(client, variant, runs) for variant, runs in sorted(by_variant.items())]


def _register(client, variant: str, runs: list) -> str:
    # Ties go to the newer run, as everywhere a variant and seed were run twice.
    runs.sort(key=lambda r: (r.data.metrics[BEST_BY], -r.info.start_time))
    best = runs[0]
    name = f"catgan-{variant}"
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"catgan's {variant} generator: "
                                       f"latents in, uint8 images out; @{ALIAS} has the lowest {BEST_BY}")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{best.info.run_id}'")
    version = existing[0].version if existing else client.create_model_version(
        name, f"{best.info.artifact_uri}/{MODEL_PATH}", run_id=best.info.run_id).version
    client.set_registered_model_alias(name, ALIAS, version)
    runner_up = (f"; next best {runs[1].info.run_name} at {runs[1].data.metrics[BEST_BY]:.4g}"
                 if len(runs) > 1 else "")
    return (f"{name}@{ALIAS} = version {version}: run {best.info.run_name} ({best.info.run_id}), "
            f"lowest {BEST_BY} {best.data.metrics[BEST_BY]:.4g} of {len(runs)} finished {variant} "
            f"run(s) with a logged generator{runner_up}")
