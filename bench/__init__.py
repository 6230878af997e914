"""Benchmark suite of tracker_ws (issue 4): `python -m bench --help`, see bench/README.md."""
