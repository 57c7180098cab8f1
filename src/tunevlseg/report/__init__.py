"""Reporting: collect per-cell tuning results and render Dice tables and figures.

* :mod:`tunevlseg.report.collect` -- read ``best.json`` / ``trials.csv`` files into DataFrames.
* :mod:`tunevlseg.report.tables` -- the Dice table (csv / markdown / LaTeX booktabs).
* :mod:`tunevlseg.report.figures` -- Dice heat map and prompt-depth-vs-Dice figure.
"""
