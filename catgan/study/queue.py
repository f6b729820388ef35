"""DVC's experiment queue as catgan reads it: each experiment's state by name, and a wait on named
experiments that outlives the queue's transient read errors.

`dvc queue status` fails now and then while workers run (DVC 3.67.1, celery and kombu 5.7.0).
After its table it asks the workers what they run (``CeleryQueue.worker_status`` in
dvc/repo/experiments/queue/celery.py, which is celery's ``inspect().active()``). The question and
the answers are message files in the queue's broker folder, which kombu's filesystem transport
writes by creating the file, then locking and writing it (``Channel._put`` in
kombu/transport/filesystem.py), and takes without the lock (``Channel._get``: move, then read).
A read between the create and the write finds an empty document, and DVC stops with "unexpected
error - Expecting value: line 1 column 1 (char 0)". The exchange's table of queues has the same
gap while a worker starts (``get_table`` against ``_queue_bind``), and `dvc queue start` asks the
workers the same question. None of the queue's own files is written atomically, so no sounder
source exists: a read that fails with a JSON decoder's message is made again after a pause.

The table can also miss a task for one read: DVC lists the running tasks (the broker's processed
folder) before the queued ones (its in folder), and a worker that takes a task between the two
moves it out of both. So an experiment has ended only when the table says Success or Failed, or
once it has been missing from ``GONE_AFTER`` reads in a row.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from catgan.errors import UserError
from catgan.study.dvccli import DvcFailed, dvc

ACTIVE = ("Queued", "Running")
GONE = "Gone"
GONE_AFTER = 3
PAUSES_S = (1.0, 2.0, 4.0)
# What json.JSONDecodeError says of an empty or half-written document, and DVC's own wrapper of
# it for the executor info files that `dvc exp show` reads while an experiment changes state.
TRANSIENT = re.compile(r": line \d+ column \d+ \(char \d+\)$|JSON file structure is corrupted")

log = logging.getLogger(__name__)


def read(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """``dvc args`` for a command that may safely run again (it reads the queue, or starts only
    the workers that are missing): after each pause in turn while it fails the transient way."""
    pauses, tries = list(PAUSES_S), 0
    while True:
        tries += 1
        try:
            return dvc(*args, capture=True, cwd=cwd, env=env)
        except DvcFailed as err:
            if not TRANSIENT.search(err.message):
                raise
            if not pauses:
                raise UserError(f"{err} ({tries} tries, each failed this way; see `dvc queue "
                                "status` and the workers' logs in .dvc/tmp/exps/celery)") from None
            log.warning("%s; reading again in %g s", err, pauses[0])
            time.sleep(pauses.pop(0))


def status(cwd: Path | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """Experiment name -> Queued, Running, Success or Failed, from `dvc queue status`."""
    return parse(read("queue", "status", cwd=cwd, env=env))


def parse(table: str) -> dict[str, str]:
    """The states in `dvc queue status`'s table, by the columns its header sets. A name queued
    again after a failure keeps its active state: the table lists running and queued tasks first."""
    lines = table.splitlines()
    header = next((i for i, line in enumerate(lines) if line.split()[:1] == ["Task"]), None)
    if header is None:
        return {}
    name_at, created_at, status_at = (lines[header].index(h) for h in ("Name", "Created", "Status"))
    states: dict[str, str] = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        name = line[name_at:created_at].strip()
        if name:
            states.setdefault(name, line[status_at:].strip())
    return states


def wait(names: Iterable[str], *, poll_s: float = 10.0, deadline: float | None = None,
         cwd: Path | None = None, env: dict[str, str] | None = None,
         on_end: Callable[[str, str], None] = lambda name, state: None) -> dict[str, str]:
    """Read the queue every ``poll_s`` until each of ``names`` has ended, or until the
    ``time.time()`` ``deadline``; call ``on_end(name, state)`` as each ends. Returns the last
    state seen of each name: Success, Failed or Gone once ended, else Queued or Running."""
    names = list(names)
    left, last, missed = set(names), {}, dict.fromkeys(names, 0)
    while left and (deadline is None or time.time() < deadline):
        time.sleep(poll_s)
        states = status(cwd, env)
        for name in sorted(left):
            missed[name] = 0 if name in states else missed[name] + 1
            if name in states or missed[name] >= GONE_AFTER:
                last[name] = states.get(name, GONE)
            if last.get(name, ACTIVE[0]) not in ACTIVE:
                left.discard(name)
                on_end(name, last[name])
    return last
