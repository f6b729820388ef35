"""A throwaway SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's packages
(``slurm-wlm``, ``munge``) on 127.0.0.1, one node named localhost with 2 CPUs, its configuration,
key, state and logs in one folder. Stopped by the process ids it started, and checked gone."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port, missing

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
TIMEOUT_S = 60


@dataclass(frozen=True)
class Cluster:
    folder: Path
    env: dict  # SLURM_CONF: what SLURM's commands need to find this cluster

    def run(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
        return proc.stdout

    def jobs(self) -> list[str]:
        """The jobs that wait or run, one line per array task: id, state, name."""
        return self.run("squeue", "--noheader", "--array", "--format=%i %T %j").splitlines()

    def wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := self.jobs()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"jobs still in SLURM after {timeout_s} s: {left}"

    def completed(self) -> list[dict[str, str]]:
        """The job completion records (jobcomp/filetxt): one per ended job or requeued attempt,
        as SLURM's accounting would list them."""
        log = self.folder / "jobcomp.log"
        if not log.is_file():
            return []
        return [dict(field.split("=", 1) for field in line.split() if "=" in field)
                for line in log.read_text().splitlines()]


def binaries() -> dict[str, str]:
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
             for name in (*DAEMONS, *CLIENTS)}
    absent = [name for name, path in found.items() if not path]
    if absent:
        missing(f"SLURM or munge is not installed (no {', '.join(absent)})",
                "apt-get install slurm-wlm munge")
    return found


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[Cluster]:
    exe = binaries()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged refuses a socket folder others cannot search
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    socket_path = folder / "munge.socket"
    conf = folder / "slurm.conf"
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    (folder / "plugstack.conf").write_text("")
    conf.write_text(config(folder, socket_path))
    env = {"SLURM_CONF": str(conf)}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["munged"] = daemon(folder, [exe["munged"], "--foreground", "--force",
                                          f"--socket={socket_path}", f"--key-file={key}",
                                          f"--pid-file={folder / 'munged.pid'}",
                                          f"--log-file={folder / 'munged.log'}",
                                          f"--seed-file={folder / 'munged.seed'}"], env)
        wait_for(lambda: socket_path.exists(), procs, "munged's socket")
        procs["slurmctld"] = daemon(folder, [exe["slurmctld"], "-D", "-f", str(conf)], env)
        procs["slurmd"] = daemon(folder, [exe["slurmd"], "-D", "-f", str(conf), "-N", "localhost"],
                                 env)
        cluster = Cluster(folder, env)
        wait_for(lambda: node_state(cluster) == "idle", procs, "the node to be idle")
        yield cluster
    finally:
        stop(folder, env, procs)


def config(folder: Path, socket_path: Path) -> str:
    # cred_expire: a requeued job waits this long before it starts again (120 s by default).
    return f"""\
ClusterName=catgantest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path},cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
PlugStackConfig={folder / 'plugstack.conf'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder / 'jobcomp.log'}
KillWait=5
MinJobAge=3600
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def daemon(folder: Path, cmd: list[str], env: dict) -> subprocess.Popen:
    name = Path(cmd[0]).name
    with open(folder / f"{name}.out", "wb") as out:
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def node_state(cluster: Cluster) -> str:
    proc = subprocess.run(["sinfo", "--noheader", "--format=%T"], env={**os.environ, **cluster.env},
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def wait_for(ready, procs: dict[str, subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        assert not dead and time.monotonic() < deadline, f"waiting for {what}: exited {dead}"
        time.sleep(0.2)


def stop(folder: Path, env: dict, procs: dict[str, subprocess.Popen]) -> None:
    """Cancel what jobs are left (their steps outlive slurmd by design), then stop slurmd,
    slurmctld and munged in turn by their process ids, and check each gone."""
    if "slurmd" in procs and procs["slurmd"].poll() is None:
        cluster = Cluster(folder, env)
        cluster.run("scancel", "--me")
        cluster.wait_idle(TIMEOUT_S)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)
            raise AssertionError(f"{name} ({proc.pid}) ignored SIGTERM for {TIMEOUT_S} s") from None
