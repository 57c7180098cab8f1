"""Reporting: collect per-cell tuning results and render Dice tables, statistics and figures.

* :mod:`tunevlseg.report.collect` -- read ``best.json`` / ``trials.csv`` files into DataFrames.
* :mod:`tunevlseg.report.tables` -- the Dice table (csv / markdown / LaTeX booktabs).
* :mod:`tunevlseg.report.figures` -- Dice heat map and prompt-depth-vs-Dice figure (with ρ and its CI).
* :mod:`tunevlseg.report.stats` -- per-image statistics: cell means with bootstrap CIs, paired
  Wilcoxon tests with Holm correction, "not significantly worse than the best".
* :mod:`tunevlseg.report.ranking` -- Friedman test, critical-difference diagram, rank stability.
* :mod:`tunevlseg.report.cost` -- cost table, Dice vs trainable parameters with the Pareto front.
* :mod:`tunevlseg.report.render` -- writes all of them (paths from :mod:`tunevlseg.report.layout`).
"""
