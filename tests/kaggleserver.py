"""A local Kaggle API on 127.0.0.1:7777, where kaggle 2.2.5 sends its requests when
KAGGLE_API_ENVIRONMENT=TEST.

It answers what the client asks to fetch a dataset (read from kaggle/api/kaggle_api_extended.py
and kagglesdk): POST /api/v1/<service>/<method> with a JSON body, signed with HTTP Basic
(username, key) or a Bearer token; errors as JSON {"code", "message"}, as Kaggle sends them.
  security.OAuthService/IntrospectToken     -> {"active", "username"}   (access-token sign-in)
  datasets.DatasetApiService/GetDataset     -> {"ref", "currentVersionNumber", ...}
  datasets.DatasetApiService/DownloadDataset -> 302 to a signed storage address, whose GET is
                                               the dataset's zip (Content-Length, ETag)
Storage honours a Range header (206), as Kaggle's does. Every request is recorded. ``fault`` makes it
misbehave: "403", "429" or "500" on every API call, "drop" the connection half way through every
zip download, "drop_once" only the first, "truncated" or "corrupt" zip, "slow" (no answer at all to
API calls) or "stall" (half the zip, then silence).
"""
from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from imagefactory import noise

PORT = 7777  # fixed by kagglesdk: KaggleEnv.TEST is http://localhost:7777
API = "/api/v1/"


def kaggle_zip(count: int = 4) -> bytes:
    """A dataset zip in the cats-faces layout: cats/<n>.jpg, small JPEGs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in range(1, count + 1):
            jpeg = io.BytesIO()
            noise(48, 48, n).save(jpeg, format="JPEG", quality=90)
            zf.writestr(f"cats/{n}.jpg", jpeg.getvalue())
    return buf.getvalue()


class KaggleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, username: str, key: str, token: str, datasets: dict[str, tuple[int, bytes]]):
        self.username, self.key, self.token = username, key, token
        self.datasets = datasets  # "owner/slug" -> (current version, zip bytes)
        self.fault = ""
        self.requests: list[dict] = []
        self.release = threading.Event()  # ends the stalls at teardown
        try:
            super().__init__(("127.0.0.1", PORT), Handler)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise RuntimeError(f"127.0.0.1:{PORT} is taken by another process; the local Kaggle "
                               "API needs that port (kagglesdk's TEST endpoint): stop it and "
                               "run the tests again") from None

    def signed_in(self, authorization: str) -> bool:
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return authorization in (basic, f"Bearer {self.token}")


@contextlib.contextmanager
def serving(server: KaggleServer) -> Iterator[KaggleServer]:
    """``server`` answering from a thread; then stopped, its stalls released and its port freed."""
    thread = threading.Thread(target=server.serve_forever, name="local-kaggle", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


class Handler(BaseHTTPRequestHandler):
    server: KaggleServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the test reads server.requests instead
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, json.dumps({"code": status, "message": message}).encode(),
                   headers=headers)

    def _record(self, body: dict | None) -> None:
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": dict(self.headers), "json": body})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self._record(body)
        server, method = self.server, self.path.removeprefix(API)
        if server.fault == "slow":
            server.release.wait(60)
            return
        if server.fault == "500":
            return self._send(500, b"<html>Internal Server Error</html>", "text/html")
        if server.fault == "403":
            return self._error(403, "Permission 'datasets.get' was denied")
        if server.fault == "429":
            return self._error(429, "Too Many Requests", {"Retry-After": "1"})
        if method == "security.OAuthService/IntrospectToken":
            active = body.get("token") == server.token
            return self._send(200, json.dumps({"active": active, "username": server.username
                                               if active else ""}).encode())
        if not server.signed_in(self.headers.get("Authorization", "")):
            return self._error(401, "Unauthenticated")
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in server.datasets:
            return self._error(404, f"Dataset {ref} not found")
        version = server.datasets[ref][0]
        if method == "datasets.DatasetApiService/GetDataset":
            return self._send(200, json.dumps({"ref": ref, "currentVersionNumber": version,
                                               "title": "Cats"}).encode())
        if method == "datasets.DatasetApiService/DownloadDataset":
            if body.get("datasetVersionNumber") not in (None, version):
                return self._error(404, f"Dataset {ref} has no version "
                                        f"{body['datasetVersionNumber']}")
            self.send_response(302)
            self.send_header("Location", f"/storage/{ref}/{version}.zip?signature=local")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._error(404, f"no such method {method}")

    def do_GET(self) -> None:
        self._record(None)
        server = self.server
        ref, _, _ = self.path.removeprefix("/storage/").rpartition("/")
        if ref not in server.datasets:
            return self._error(404, "no such object")
        data = server.datasets[ref][1]
        if server.fault == "truncated":
            data = data[: len(data) * 2 // 3]
        elif server.fault == "corrupt":  # the same length, scrambled from the first entry on
            data = data[:40] + bytes(b ^ 0x5A for b in data[40:-200]) + data[-200:]
        status, headers = 200, {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged.removeprefix("bytes=").removesuffix("-"))
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
            data = data[start:]
        earlier = [r for r in server.requests if r["method"] == "GET"][:-1]
        if server.fault not in ("drop", "stall") and (server.fault != "drop_once" or earlier):
            return self._send(status, data, "application/zip", headers)
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if server.fault == "stall":
            server.release.wait(60)
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        return None
