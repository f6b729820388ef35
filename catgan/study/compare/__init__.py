"""Is one variant better than the other over several seeds, and how sure are we?

Runs come from DVC experiments (``from_dvc``) or from MLflow (``from_mlflow``) as ``runs.Record``s;
``stats`` gives per variant the mean over seeds with a Student t interval and per metric the
difference with a Welch t interval; ``render`` writes the table, JSON and figure.

Part of catgan.study; may import what it may.
"""
