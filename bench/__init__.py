"""`make bench`: ajo-exports against a plain Polars + SDK floor and against dlt, on real local servers.

Run it as `python -m bench.run` from the repository root (see bench/run.py for the flags).
"""
