"""The parts of ``benchmarks/bench_run.py``, one module each, over shared floors and child runs."""
