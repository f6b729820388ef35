"""How good a generator is: sliced Wasserstein distance (``swd``), the diversity ratio
(``diversity``), Inception features (``inception``), and the evaluate stage's measurement of a
generator against held-out real images (``evaluate``).

May import: the base and catgan.model.
"""
