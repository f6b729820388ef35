"""Arms over seeds: the arms (``arms``), running them as DVC experiments (``run``, through
``dvccli`` and ``queue``, which reads DVC's queue through its transient errors), exporting the
runs from MLflow into a study folder (``export``, ``folder``), the statistics and tables of
``compare``, the study page (``page``, ``samples``) and where its numbers came from
(``provenance``).

May import: every other part; only catgan.cli, catgan.demo and stages/ import it.
"""
