#!/bin/bash
# The train stage on several machines under SLURM, one task per machine, each task a torchrun node
# of train.nproc processes (docs/sharing-and-scaling.md: Training across machines). Submit it from
# the project's root, on a filesystem every machine mounts, once `dvc repro preprocess` has run:
#   sbatch --nodes=2 --gpus-per-node=8 slurm/multinode-train.sh
# Task 0 runs `dvc repro train`, which records the outputs; the others run the stage's command
# outside DVC and write nothing. Node ranks are the task ranks, so static rendezvous puts global
# rank 0 in task 0. PET_MASTER_PORT, if set, picks the port; by default the job id does.
#SBATCH --job-name=catgan-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
set -euo pipefail
# The project's .venv where there is one; else the environment sbatch was called from (it passes it on).
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
nproc=$(python -c 'from catgan.config import load_params; print(load_params().train.nproc)')
export PET_NNODES=$SLURM_NTASKS
export PET_MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export PET_MASTER_PORT=${PET_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
srun --kill-on-bad-exit=1 bash -c 'export PET_NODE_RANK=$SLURM_PROCID
  if [ "$SLURM_PROCID" = 0 ]; then exec dvc repro train
  else exec python -m catgan.training.launch --nproc-per-node='"$nproc"' --module stages.train; fi'
