"""Arms over seeds: the arms (``arms``), running them as DVC experiments (``run``, through
``dvccli`` and ``queue``, which reads DVC's queue through its transient errors), on a SLURM
cluster (``slurm``, ``slurmtask``) or without DVC and MLflow (``standalone``, the GPU study's
runs), the study folder's format (``folder``: written, read, packed) and its export from MLflow
(``export``), the statistics and tables of ``compare``, the study page (``page``, ``samples``) and
where its numbers came from (``provenance``).

May import: every other part; only catgan.cli, catgan.demo and stages/ import it.
"""
