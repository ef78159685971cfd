"""Benchmarks of diffusion-schemes, each a ratio against a reference measured in the same run.

Run them all with ``python -m benchmarks`` (``--quick`` for a seconds-long smoke run); the
result is written to ``docs/performance.md`` and ``docs/performance.json``. Every timing
interleaves the measured code and its reference block by block and reports the median of
the per-block ratios with its spread, so a loaded machine slows both alike.
"""
