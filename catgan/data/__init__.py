"""The image set: Kaggle, folder, zip or synthetic sources (``sources``), safe archive
extraction, and preprocessing into the prepared array with its manifest.

May import: the base (catgan.config, errors, fileio, images, progress) only.
"""
