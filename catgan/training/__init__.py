"""Training one run: the GAN update (``step``), what a run carries (``state``), the run around them
(``loop``), bit-exact checkpoints (``checkpoint``), torchrun (``launch``, ``distributed``), seeding,
the per-epoch quality check (``monitor``), the run's outputs (``outputs``), the interface a run logs
to (``tracker``) and the code that shapes the trajectory (``codedeps``).

May import: the base, catgan.data, catgan.model and catgan.metrics. Never tracking, study or
generate: the train stage hands the loop a tracker.
"""
