"""A run's report: its loss, score and SWD figures (``plots``) and the self-contained HTML page
of the plot stage (``runpage``), whose building blocks the study page reuses.

May import: the base only.
"""
