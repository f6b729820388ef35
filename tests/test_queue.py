"""Reading DVC's experiment queue through its transient errors (catgan/study/queue.py): first
against a scripted `dvc`, then against the real queue with a `dvc` in front that fails the first
status reads exactly as DVC does when it reads a message file a worker is still writing."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from catgan.errors import UserError
from catgan.study import queue
from catgan.study import run as study
from catgan.study.dvccli import DvcFailed
from conftest import BIN, env, sh
from dvcqueue import stop_workers

# What `dvc queue status` prints when its question to the workers reads an empty reply.
TRANSIENT = ("ERROR: unexpected error - Expecting value: line 1 column 1 (char 0)\n\n"
             "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to "
             "help!\n")
TABLE = """\
Task     Name          Created    Status
0ec4272  bluer-tune    06:04 AM   Running
3a9e0c1                06:04 AM   Running
153105d  faced-gula    06:04 AM   Queued
77c01d2  bluer-tune    06:01 AM   Failed
9f3b2a4  rainy-stop    06:00 AM   Success

Worker status: 1 active, 1 idle
"""


def table(**states: str) -> str:
    rows = "".join(f"{i:07x}  {name:<12}  06:04 AM   {state}\n"
                   for i, (name, state) in enumerate(states.items()))
    return f"Task     Name          Created    Status\n{rows}\nWorker status: 0 active, 0 idle\n"


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A `dvc` that answers its Nth call with replies[N-1]: (stdout, stderr, exit code), the last
    reply again once they run out. Returns the list of argument lines it was called with."""
    calls = tmp_path / "calls"

    def install(*replies: tuple[str, str, int]) -> Path:
        for i, (out, err, code) in enumerate(replies, start=1):
            (tmp_path / f"{i}.out").write_text(out)
            (tmp_path / f"{i}.err").write_text(err)
            (tmp_path / f"{i}.rc").write_text(str(code))
        fake = tmp_path / "dvc"
        fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
n=$(wc -l < {calls}); [ "$n" -gt {len(replies)} ] && n={len(replies)}
cat {tmp_path}/$n.out; cat {tmp_path}/$n.err >&2; exit $(cat {tmp_path}/$n.rc)
""")
        fake.chmod(0o755)
        monkeypatch.setattr("catgan.study.dvccli.dvc_executable", lambda: str(fake))
        monkeypatch.setattr(queue, "PAUSES_S", (0.01, 0.01, 0.01))
        return calls

    return install


def test_parse_reads_each_state_by_the_header_columns():
    assert queue.parse(TABLE) == {"bluer-tune": "Running", "faced-gula": "Queued",
                                  "rainy-stop": "Success"}
    assert queue.parse("No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle\n") \
        == {}


def test_a_read_that_fails_the_transient_way_is_made_again(scripted, caplog):
    calls = scripted((TABLE, TRANSIENT, 255), (TABLE, TRANSIENT, 255), (TABLE, "", 0))
    with caplog.at_level(logging.WARNING, logger="catgan.study.queue"):
        assert queue.status()["bluer-tune"] == "Running"
    assert calls.read_text().splitlines() == ["queue status"] * 3
    assert caplog.messages[0] == ("`dvc queue status` failed (exit 255): unexpected error - "
                                  "Expecting value: line 1 column 1 (char 0); reading again in 0.01 s")


def test_a_transient_failure_that_persists_ends_in_one_line(scripted):
    calls = scripted((TABLE, TRANSIENT, 255))
    with pytest.raises(UserError) as err:
        queue.status()
    assert len(calls.read_text().splitlines()) == 4
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("`dvc queue status` failed (exit 255): unexpected error - "
                                     "Expecting value: line 1 column 1 (char 0) (4 tries")


def test_any_other_failure_is_not_read_again(scripted):
    calls = scripted(("", "ERROR: '.dvc/tmp/exps' is locked by another process\n", 255))
    with pytest.raises(DvcFailed, match="`dvc queue status` failed \\(exit 255\\): "
                                        "'.dvc/tmp/exps' is locked by another process$"):
        queue.status()
    assert len(calls.read_text().splitlines()) == 1


def test_a_task_missing_from_one_read_is_still_waited_for(scripted):
    """DVC lists running tasks before queued ones: a task a worker takes between the two is in
    neither, for one read."""
    scripted(*[(t, "", 0) for t in (table(a="Queued", b="Running"), table(b="Running"),
                                    table(a="Running", b="Success"), table(a="Success"))])
    ended = []
    states = queue.wait(["a", "b"], poll_s=0, on_end=lambda *named: ended.append(named))
    assert states == {"a": "Success", "b": "Success"}
    assert ended == [("b", "Success"), ("a", "Success")]


def test_a_task_missing_from_every_read_is_gone_after_a_few(scripted):
    calls = scripted((table(a="Running"), "", 0), (table(), "", 0))
    assert queue.wait(["a", "b"], poll_s=0) == {"a": queue.GONE, "b": queue.GONE}
    assert len(calls.read_text().splitlines()) == 1 + queue.GONE_AFTER


def test_wait_stops_at_its_deadline_with_the_states_it_saw(scripted):
    scripted((table(a="Running", b="Queued"), "", 0), (table(a="Success", b="Running"), "", 0))
    assert queue.wait(["a", "b"], poll_s=0.05, deadline=time.time() + 1) == {"a": "Success",
                                                                              "b": "Running"}


# -- the real queue ----------------------------------------------------------------------------

NAP = """stages:
  nap:
    cmd: python -c "import time; time.sleep(1); open('out.txt', 'w').write('${s}')"
    params: [s]
    outs: [out.txt]
"""


@pytest.fixture
def napping(tmp_path) -> Path:
    """A DVC project whose one stage sleeps a second."""
    project = tmp_path / "nap"
    project.mkdir()
    (project / "dvc.yaml").write_text(NAP)
    (project / "params.yaml").write_text("s: 0\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "nap"]):
        sh(project, *cmd)
    return project


@pytest.fixture
def failing_front(tmp_path, monkeypatch):
    """A `dvc` that fails its first N `dvc queue status` reads as DVC does, after printing DVC's
    table as DVC does, and otherwise hands over to the real dvc. Returns its control files."""
    fails, count, front = tmp_path / "fails", tmp_path / "count", tmp_path / "front" / "dvc"
    front.parent.mkdir()
    (tmp_path / "transient.err").write_text(TRANSIENT)
    front.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2" = "queue status" ]; then
  n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}
  if [ $n -le $(cat {fails}) ]; then
    {BIN / 'dvc'} queue status | sed '/^Worker status/d'
    cat {tmp_path / 'transient.err'} >&2; exit 255
  fi
fi
exec {BIN / 'dvc'} "$@"
""")
    front.chmod(0o755)
    monkeypatch.setattr("catgan.study.dvccli.dvc_executable", lambda: str(front))
    monkeypatch.setattr(queue, "PAUSES_S", (0.2, 0.2, 0.2))
    return fails, count


def queue_naps(project: Path, *names: str) -> None:
    for i, name in enumerate(names, start=1):
        sh(project, "dvc", "exp", "run", "--queue", "--name", name, "-S", f"s={i}")


@pytest.mark.slow
def test_a_study_waits_through_transient_status_failures_and_stops_on_a_persistent_one(
        napping, failing_front, monkeypatch, capsys):
    monkeypatch.chdir(napping)
    for key, value in env().items():  # DVC's workers find `dvc` on PATH, and commit with git
        monkeypatch.setenv(key, value)
    fails, count = failing_front
    try:
        queue_naps(napping, "nap-a", "nap-b")
        fails.write_text("3")
        study.wait(["nap-a", "nap-b"], jobs=2, poll_s=1)
        out = capsys.readouterr().out
        assert "study: nap-a success" in out and "study: nap-b success" in out, out
        assert int(count.read_text()) > 3  # the three failed reads, then the real ones

        queue_naps(napping, "nap-c")
        fails.write_text("1000")
        with pytest.raises(UserError) as err:
            study.wait(["nap-c"], jobs=1, poll_s=1)
        assert "\n" not in str(err.value) and str(err.value).startswith(
            "`dvc queue status` failed (exit 255): unexpected error - Expecting value: line 1 "
            "column 1 (char 0) (4 tries"), err.value
    finally:
        stop_workers(napping, grace_s=0)
