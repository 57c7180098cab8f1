"""Datasets: synthetic raw-layout generators, NIfTI volumes, preparation into a
resized memory-mapped cache (+ manifest), and the torch ``Dataset`` reading it.

Submodules are imported explicitly (``tunevlseg.data.prepare`` etc.); this
package file stays import-free so that light tools do not pull in torch.
Modules import only layers below them (``spec`` < ``sources`` < ``registry`` <
``published`` < ``prepare`` < ``ingest`` < ``cli``; checked by
``tests/unit/data/test_layers.py``).
"""
