"""Benchmark harness comparing ``rdist`` with ``dask.distributed``.

Run from the repository root with ``python -m bench`` (see bench/README.md).
"""
