"""Using a trained generator: finding and loading one from a checkpoint folder, a weights
file, a DVC experiment or MLflow (``trained``, ``weightsfile``), the latents-to-images model that
MLflow logs and serves (``imagemodel``), and ``catgan sample``'s grids, walks and nearest real
neighbours (``sample``).

May import: the base, catgan.data, catgan.model and catgan.tracking.
"""
