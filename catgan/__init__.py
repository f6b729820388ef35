"""catgan: a reproducible DCGAN study on 64x64 cat faces.

The package is layered; each part imports only the parts listed before it (tests/test_layout.py):

- ``config``, ``errors``, ``fileio``, ``images``, ``progress``: the base every part uses.
- ``data``: fetching and preparing the image set.
- ``model``: the networks, losses, DiffAugment and the average of G's weights.
- ``metrics``: SWD, diversity, Inception features, and evaluating a generator.
- ``training``: the training loop, checkpoints, torchrun, the run's outputs.
- ``report``: the run's figures and self-contained HTML page.
- ``tracking``: MLflow: the client a run logs to, the store, the team server and the UI.
- ``generate``: using a trained generator: loading it, the MLflow image model, ``catgan sample``.
- ``study``: arms over seeds: running, exporting, comparing and the study page.
- ``cli`` and ``demo``: the commands, which tie the parts together, like ``stages/``.

"""
