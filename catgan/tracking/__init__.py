"""MLflow: the client a training run logs through (``client``, an implementation of
catgan.training.tracker), the store's URI and client (``store``), a run's tags (``runmeta``), the
team server with its logins (``server``, ``auth``), and the local UI (``ui``, ``localserver``).
mlflow itself is imported lazily, inside functions.

May import: the base and catgan.training (for the tracker interface).
"""
