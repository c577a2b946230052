"""Speed, memory and training benchmarks for napari-unetseg; run with ``python -m benchmarks``.

Everything runs on a synthetic nuclei scene made on the spot (nothing is downloaded).
Results are printed as a table and written as JSON plus a plot for ``docs/benchmarks.md``.
"""
