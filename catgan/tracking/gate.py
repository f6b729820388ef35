"""The team server's gate: catgan's layer in front of MLflow's server app (catgan.tracking.server).

``mlflow server --app-name catgan`` (or ``catgan-auth``, with MLflow's basic-auth app behind it)
loads ``create_app`` through MLflow's ``mlflow.app`` entry point. Each request passes here before
MLflow's own permission checks see it, and is refused, in one line, when

- its path, or an artifact path in its query, is not already normalised (a ``.`` or
  ``..`` segment, an empty one, a percent-escape left after decoding): MLflow reads the experiment
  id from an artifact path before normalising it, so ``./2/...`` escaped its check;
- its route is one catgan and its UI pages never use, or an admin's and the sender is not one
  (catgan.tracking.routes);
- it creates an experiment with an ``artifact_location``: the server alone places artifacts,
  in its store;
- it writes an artifact anywhere but into a run's own ``<experiment>/<run>/artifacts/``;
- with logins: it changes a run its sender did not create, or an experiment (its name, its tags)
  the sender does not manage. MLflow judges runs by their experiment's permission only, so EDIT
  on the shared experiment would let every teammate change everyone's runs. A run's creator is
  the login that created it: the gate writes that login into ``user_id`` and ``mlflow.user``.

A refusal that depends on who sends the request goes only to a sender whose password is right;
any other request with a login passes on, and MLflow answers it (401 for a wrong password).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import re
import urllib.parse

from catgan.tracking import routes

log = logging.getLogger(__name__)

_MAX_BODY = 16 * 2**20  # MLflow's largest JSON request, a full log-batch, is a few MB at most
_PATH_PARAMS = ("path", "artifact_file_path", "artifact_directory_path")  # MLflow's, of artifacts
_PREFIXES = r"/(api|ajax-api)/2\.0/mlflow"
_ARTIFACTS = re.compile(r"/(api|ajax-api)/2\.0/mlflow-artifacts/artifacts(/(?P<path>.*))?")
_RUN_ARTIFACT = re.compile(r"(?P<experiment>\d+)/(?P<run>[0-9a-f]{32})/artifacts/.+")
_RUN_CHANGES = re.compile(_PREFIXES + r"/runs/(update|delete|restore|log-metric|log-parameter"
                                      r"|log-batch|set-tag|delete-tag|log-inputs)")
_EXPERIMENT_CHANGES = re.compile(_PREFIXES + r"/experiments/(update|set-experiment-tag"
                                             r"|delete-experiment-tag)")
_RUN_CREATE = re.compile(_PREFIXES + r"/runs/create")
_EXPERIMENT_CREATE = re.compile(_PREFIXES + r"/experiments/create")


class Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app():
    """The ``catgan`` app: MLflow's server without logins (a server on loopback), behind the gate."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    return Gate(app, flask_app, logins=None)


def create_auth_app():
    """The ``catgan-auth`` app: MLflow's basic-auth app behind the gate."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as mlflow_auth_app
    from mlflow.server.auth import store

    return Gate(mlflow_auth_app(), flask_app, logins=Logins(store))


class Logins:
    """Who sends a request, as MLflow's basic-auth app will judge it: its user store."""

    def __init__(self, store):
        self.store = store

    def verified(self, name: str, password: str) -> bool:
        return self.store.authenticate_user(name, password)

    def is_admin(self, name: str) -> bool:
        return self.store.get_user(name).is_admin

    def manages(self, name: str, experiment_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.store.get_experiment_permission(experiment_id, name).permission == "MANAGE"
        except MlflowException:  # no permission of their own: the default, READ
            return False


class Gate:
    """ASGI middleware around MLflow's app (module docstring)."""

    def __init__(self, app, flask_app, logins: Logins | None):
        from fastapi.routing import iter_route_contexts
        from starlette.routing import Mount

        self.app, self.logins = app, logins
        # Routed as MLflow routes: FastAPI's own routes first, then the Flask app mounted at /.
        self.native = [r for r in iter_route_contexts(app.routes) if not isinstance(r.original_route, Mount)]
        self.flask_routes = flask_app.url_map.bind("localhost")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # no route of MLflow's takes one
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._judge(scope, receive)
        except Refusal as refusal:
            log.warning("refused %s %s: %s", scope["method"], scope["path"], refusal)
            await _answer(send, refusal.status, str(refusal))
            return
        await self.app(scope, receive, send)

    async def _judge(self, scope, receive):
        """Raise a Refusal, or return the ``receive`` that MLflow's app reads the request from."""
        method, path = scope["method"], scope["path"]
        _check_normalised(path, scope["query_string"])
        if method == "OPTIONS":  # CORS preflight: no data either way
            return receive
        route = self._route(scope)
        if route is None:
            return receive  # MLflow answers 404 or 405 itself
        policy = routes.policy_of("GET" if method == "HEAD" else method, route)
        if policy in (None, routes.REFUSED):
            raise Refusal(403, f"catgan's team server does not serve {method} {route}: neither "
                               "catgan's commands nor the UI pages of its runs use it")
        artifact = _ARTIFACTS.fullmatch(path)
        if artifact:
            return await self._artifact(scope, receive, method, artifact["path"])
        user = _credentials(scope) if self.logins else None
        if policy == routes.ADMIN and user:
            if not await self._as(user, self.logins.is_admin, user[0]):
                raise Refusal(403, f"{route} is for the server's admins")
        if _EXPERIMENT_CREATE.fullmatch(path):
            body, receive = await _json_body(scope, receive)
            if body.get("artifact_location"):
                raise Refusal(400, "experiments get their artifact location from the team server: "
                                   "leave artifact_location out (it named "
                                   f"{body['artifact_location']!r})")
        if not user:
            return receive
        if _RUN_CREATE.fullmatch(path):
            body, _ = await _json_body(scope, receive)
            # The run's creator is the login, whatever the client says.
            body["user_id"] = user[0]
            for tag in body.get("tags") or []:
                if isinstance(tag, dict) and tag.get("key") == "mlflow.user":
                    tag["value"] = user[0]
            return _replay(scope, json.dumps(body).encode(), receive)
        if _RUN_CHANGES.fullmatch(path):
            body, receive = await _json_body(scope, receive)
            for run_id in {str(body[key]) for key in ("run_id", "run_uuid") if body.get(key)}:
                await self._owner(user, run_id)
        elif _EXPERIMENT_CHANGES.fullmatch(path):
            body, receive = await _json_body(scope, receive)
            experiment = str(body.get("experiment_id") or "")
            if not await self._as(user, self._manager, user[0], experiment):
                raise Refusal(403, f"experiment {experiment} is not yours to change: renaming it and "
                                   "its tags are for whoever manages it")
        return receive

    def _route(self, scope) -> str | None:
        """The route of MLflow's that ``scope`` reaches, as MLflow declares it."""
        from starlette.routing import Match
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import RequestRedirect

        for route in self.native:
            if route.matches(scope)[0] == Match.FULL:
                return route.path
        try:
            rule, _ = self.flask_routes.match(scope["path"], scope["method"], return_rule=True)
        except (HTTPException, RequestRedirect):
            return None
        return rule.rule

    async def _artifact(self, scope, receive, method: str, path: str | None):
        """Artifacts are read within an experiment's folder and written into one's own run's."""
        query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
        where = path if path is not None else (query.get("path") or [""])[0]
        if not re.match(r"\d+(/|$)", where):
            raise Refusal(400, "artifact paths start with their experiment's id "
                               "(<experiment>/<run>/artifacts/...)")
        if method == "PUT":
            found = _RUN_ARTIFACT.fullmatch(where)
            if not found:
                raise Refusal(403, "artifacts are written only into a run's own folder "
                                   "(<experiment>/<run>/artifacts/...)")
            user = _credentials(scope) if self.logins else None
            if user:
                await self._owner(user, found["run"], found["experiment"])
        return receive

    async def _owner(self, user: tuple[str, str], run_id: str, experiment: str | None = None):
        """Refuse unless ``user`` created run ``run_id`` (of ``experiment``, whose artifact folder
        it then has), or is an admin. A run MLflow does not know passes on: MLflow refuses it."""
        try:
            owner, run_experiment, artifact_uri = await asyncio.to_thread(_run_info, run_id)
        except Exception as err:  # MLflow wraps the store's errors in MlflowException
            if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return
            raise Refusal(503, f"the team server could not look up run {run_id} "
                               f"({type(err).__name__}); try again") from None
        mine = owner == user[0] and (experiment is None or (
            run_experiment == experiment
            and artifact_uri == f"mlflow-artifacts:/{experiment}/{run_id}/artifacts"))
        if not mine and not await self._as(user, self.logins.is_admin, user[0]):
            raise Refusal(403, f"run {run_id} is not yours to change: a run is changed only by "
                               "the login that created it (or an admin)")

    def _manager(self, name: str, experiment: str) -> bool:
        return self.logins.is_admin(name) or self.logins.manages(name, experiment)

    async def _as(self, user: tuple[str, str], allowed, *args) -> bool:
        """``allowed(*args)`` if ``user``'s password is right; else True, and MLflow refuses the
        request (401) itself: nobody learns a thing about a login they do not hold."""
        def judged() -> bool:
            return not self.logins.verified(*user) or allowed(*args)

        return await asyncio.to_thread(judged)


@functools.lru_cache(maxsize=4096)
def _run_info(run_id: str) -> tuple[str, str, str]:
    """A run's creator, experiment and artifact URI: none of them ever changes."""
    from mlflow.server.handlers import _get_tracking_store

    info = _get_tracking_store().get_run(run_id).info
    return info.user_id, info.experiment_id, info.artifact_uri


def _check_normalised(path: str, query: bytes) -> None:
    """Refuse a path, or a path-like query parameter, that normalising would change."""
    if path != "/" and not _normalised(path[1:]):
        raise Refusal(400, "catgan's team server takes only normalised paths: no '.', '..' or "
                           "empty segment, nothing percent-encoded twice")
    for name, value in urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in _PATH_PARAMS and value and not _normalised(value):
            raise Refusal(400, f"the query parameter {name} must be a normalised relative path: "
                               "no '.', '..' or empty segment, no leading '/'")


def _normalised(path: str) -> bool:
    return urllib.parse.unquote(path) == path and all(
        segment not in ("", ".", "..") for segment in path.split("/"))


def _credentials(scope) -> tuple[str, str] | None:
    """The login of an HTTP basic Authorization header, parsed as strictly as both of MLflow's
    parsers (Flask's and FastAPI's) agree on it; None without one."""
    values = [value for key, value in scope["headers"] if key == b"authorization"]
    if not values:
        return None
    parts = values[0].split()
    try:
        if len(values) != 1 or len(parts) != 2 or parts[0].lower() != b"basic":
            raise ValueError
        name, colon, password = base64.b64decode(parts[1], validate=True).decode("ascii").partition(":")
        if not colon:
            raise ValueError
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise Refusal(401, "catgan's team server takes one Authorization header: HTTP basic "
                           "auth of user:password") from None
    return name, password


async def _json_body(scope, receive) -> tuple[dict, object]:
    """The JSON object of the request's body, read as MLflow reads it (a JSON string holding it
    too), and a ``receive`` that gives MLflow the same body."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left
            raise Refusal(400, "the request ended before its body")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > _MAX_BODY:
            raise Refusal(413, f"a request body of the team server's API holds {_MAX_BODY} bytes at most")
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    try:
        body = json.loads(raw) if raw.strip() else {}
        if isinstance(body, str):
            body = json.loads(body)
    except ValueError:
        raise Refusal(400, "the request's body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "the request's body is not a JSON object")
    return body, _replay(scope, raw, receive)


def _replay(scope, body: bytes, receive):
    """A ``receive`` giving ``body`` once (with its length set in ``scope``), then what
    ``receive`` gives (the client leaving)."""
    scope["headers"] = [(k, v) for k, v in scope["headers"]
                        if k not in (b"content-length", b"transfer-encoding")]
    scope["headers"].append((b"content-length", str(len(body)).encode()))
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(send, status: int, message: str) -> None:
    code = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 413: "INVALID_PARAMETER_VALUE"}
    body = json.dumps({"error_code": code.get(status, "PERMISSION_DENIED"), "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
