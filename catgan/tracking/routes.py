"""Which of MLflow's routes the team server serves (catgan.tracking.gate), each one on purpose.

MLflow 3.17's server app has 543 routes (its Flask rules and its FastAPI routes, with logins), 545
pairs of method and path; catgan's commands and the UI pages of its runs and registered models
use a few dozen. Every pair
is SERVED (MLflow's own permission checks then apply, and the gate's), kept for ADMINs, or REFUSED:
the GenAI features (traces, gateway, assistant, demo, jobs, prompts, scorers, datasets, ...),
webhooks, multipart and presigned uploads, and writes of logged models. A route that none of the
patterns below names is refused too; tests/test_server_gate.py fails when an MLflow upgrade adds
one, so that it gets decided.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

SERVED, ADMIN, REFUSED = "served", "admin", "refused"
_ANY = "GET|POST|PUT|PATCH|DELETE"


def _api(paths: str, version: int = 2) -> str:
    """``paths`` (a regex) under mlflow/ of the REST API and of the UI's ajax API."""
    return rf"/(api|ajax-api)/{version}\.0/mlflow/({paths})"


_ARTIFACT_FILE = r"/(api|ajax-api)/2\.0/mlflow-artifacts/artifacts/(<path:artifact_path>|\{artifact_path:path\})"

# (policy, methods, route): regexes over a route's method and its path as MLflow declares it
# (Flask: /<path:x>, FastAPI: /{x:path}); each route of MLflow's matches exactly one line.
POLICY: tuple[tuple[str, str, str], ...] = (
    # The UI's page and files, and what clients ask before anything else.
    (SERVED, "GET", r"/|/static-files/<path:path>|/health|/version"),
    (SERVED, "GET", _api("server-info", 3)),
    # Runs, their metrics and params: the stages' tracker, compare, study, sample, the UI.
    (SERVED, _ANY, _api("experiments/(create|get|get-by-name|search|update|delete|restore"
                        "|set-experiment-tag|delete-experiment-tag|search-datasets)")),
    (SERVED, _ANY, _api("runs/(create|get|search|update|delete|restore|log-metric|log-parameter"
                        "|log-batch|set-tag|delete-tag|log-inputs)")),
    (SERVED, "GET", _api("metrics/(get-history|get-history-bulk|get-history-bulk-interval)")),
    (SERVED, "GET|POST", r"/graphql"),  # the UI's run pages; its mutations only search
    # The UI's run pages ask for the gateway's endpoints: the server (no MLFLOW_DEPLOYMENTS_TARGET)
    # answers an empty list and calls nothing.
    (SERVED, "GET", _api("gateway-proxy")),
    # Artifacts: listed and read by anyone who may read the run, written into a run's own folder.
    (SERVED, "GET", _api("artifacts/list") + r"|/get-artifact|/model-versions/get-artifact"),
    (SERVED, "GET", r"/(api|ajax-api)/2\.0/mlflow-artifacts/artifacts"),
    (SERVED, "GET|PUT", _ARTIFACT_FILE),
    # The model registry: `catgan compare --register`, `catgan sample models:/...`, its UI pages.
    (SERVED, _ANY, _api("registered-models/(create|get|search|rename|update|delete|set-tag"
                        "|delete-tag|get-latest-versions|alias)")),
    (SERVED, _ANY, _api("model-versions/(create|get|search|update|delete|set-tag|delete-tag"
                        "|transition-stage|get-download-uri)")),
    # Logged models: the UI reads them; catgan logs its generator as a run's artifacts instead.
    (SERVED, "GET", _api(r"logged-models/<model_id>(/artifacts/(directories|files))?")),
    (SERVED, "POST", _api("logged-models/search")),
    (REFUSED, "POST|PATCH|DELETE", _api(r"logged-models(/<model_id>(/params|/tags(/<tag_key>)?)?)?")),
    # Logins: one's own user and password; the rest is the admin's (add-user uses it).
    (SERVED, "GET", _api("users/(current|get)")),
    (SERVED, "PATCH", _api("users/update-password")),
    (SERVED, "GET", _api("users/current/permissions", 3)),
    (ADMIN, _ANY, _api("users/(create|list|delete|update-admin)")),
    (ADMIN, _ANY, _api("users/(permissions/(grant|revoke|get|list)|roles/list)|roles/.+", 3)),
    (REFUSED, "GET|POST", r"/signup|/api/2\.0/mlflow/users/create-ui"),
    # Never used by catgan nor its UI pages.
    (REFUSED, "GET", r"/build/<path:filename>"),  # a second copy of /static-files
    (REFUSED, _ANY, r"/(api|ajax-api)/2\.0/mlflow-artifacts/(mpu|presigned)/.+"),
    (REFUSED, "DELETE", _ARTIFACT_FILE),
    (REFUSED, "POST", _api("artifacts/presigned-(download|upload)-url|upload-artifact")),
    (REFUSED, "POST", _api("runs/(log-model|outputs|create-promptlab-run)")),
    (REFUSED, "POST", r"/(api|ajax-api)/2\.0mlflow/experiments/search-datasets"),  # MLflow's typo
    (REFUSED, "POST", _api("gateway-proxy")),
    (REFUSED, _ANY, _api("(traces|unified-traces|get-trace-artifact|get-online-trace-details"
                         "|webhooks)(/.*)?")),
    (REFUSED, _ANY, _api("(traces|get-trace-artifact|gateway|assistant|mcp-servers|jobs|datasets"
                         "|demo|genai|issues|label-schemas|prompt-optimization|review-queues"
                         "|scorer|scorers|ui-telemetry|workspaces)(/.*)?", 3)),
    (REFUSED, _ANY, r"/gateway/.+|/v1/traces|/ajax-api/3\.0/jobs/.*"),
)
_COMPILED = tuple((policy, re.compile(methods), re.compile(path)) for policy, methods, path in POLICY)


def policy_of(method: str, route: str) -> str | None:
    """The policy of MLflow's ``route`` for ``method``; None: a route no line names."""
    found = [policy for policy, methods, path in _COMPILED
             if methods.fullmatch(method) and path.fullmatch(route)]
    return found[0] if len(found) == 1 else None


def unplaced(routes: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The ``(method, route)`` pairs that no line or several lines name, and the lines that name
    none of them."""
    routes = list(dict.fromkeys(routes))  # MLflow declares a few twice (/health, server-info)
    named = {line: [r for r in routes if methods.fullmatch(r[0]) and path.fullmatch(r[1])]
             for line, (_, methods, path) in zip(POLICY, _COMPILED)}
    counts: dict[tuple[str, str], int] = {}
    for found in named.values():
        for route in found:
            counts[route] = counts.get(route, 0) + 1
    return ([f"{m} {r}" for m, r in routes if counts.get((m, r)) != 1],
            [f"{line[1]} {line[2]}" for line, found in named.items() if not found])


def mlflow_routes(fastapi_app, flask_app) -> Iterator[tuple[str, str]]:
    """Every (method, route) of MLflow's server app: the FastAPI routes, then the Flask rules of
    the app FastAPI mounts at /."""
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    for route in iter_route_contexts(fastapi_app.routes):
        if not isinstance(route.original_route, Mount):
            yield from ((method, route.path) for method in sorted(route.methods or ()))
    for rule in flask_app.url_map.iter_rules():
        yield from ((method, rule.rule) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
