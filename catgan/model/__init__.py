"""The networks and what training puts around them: the course's DCGAN and its fused variant
(``nets``), the GAN losses and the D/G pair each ``train.loss`` names (``losses``), DiffAugment
(``augment``) and the average of G's weights (``ema``).

May import: the base (catgan.config, errors, fileio, images, progress) only.
"""
