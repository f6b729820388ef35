"""Servers this project starts on the machine (the MLflow UI, the team server): their port, the
wait until they answer, and stopping exactly their process group."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

from catgan.errors import UserError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port(host: str, port: int, what: str, var: str) -> int:
    """Fail now rather than after the server's slow start: on a taken port MLflow even exits 0."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot serve {what} on {host}:{port} ({err.strerror}); stop what "
                            f"uses that port or pick another with {var}=<port>") from None
    return port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def client_host(host: str) -> str:
    """Where to reach a server bound to ``host``: a wildcard address is reachable on loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if ":" in host:
        return "[::1]" if host == "::" else f"[{host}]"
    return host


def wait_answering(url: str, proc: subprocess.Popen, timeout: float, what: str,
                   output: Callable[[], str]) -> None:
    """Until GET ``url`` answers 200; a UserError quoting ``output()`` if ``proc`` exits or the
    time runs out."""
    # No proxy: a proxy taken from the environment would not reach our loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"{what} exited with code {proc.returncode} while starting: {output()}")
        with contextlib.suppress(OSError):  # urllib's URLError included: not answering yet
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise UserError(f"{what} did not answer within {timeout:.0f} s: {output()}")


def stop_group(group: int, grace: float = 10.0) -> None:
    """SIGTERM a server's process group (it was started with start_new_session), SIGKILL what is
    left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(group):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        time.sleep(0.1)


def group_alive(group: int) -> bool:
    # An exited but unreaped leader would still count as a member: reap our own child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(group, os.WNOHANG)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
