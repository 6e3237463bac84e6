"""`make bench` (`python -m bench`): the service measured against the ceilings of its own stack (see BENCHMARKS.md).

Scenarios (bench/scenarios.py: cache-hit path and cold burst; bench/slow_upstream.py: worker models; bench/economy.py:
upstream economy and footprint; bench/instructions.py: callgrind, beside the cache-hit timings;
bench/profile_hot_path.py: pyinstrument) run the real service under gunicorn with
config/gunicorn.conf.py, the Ayrshare emulator and a real redis-server (bench/stack.py), driven by wrk or by a Python
client in a separate process (bench/loadgen.py, bench/client.py). Each prints a table and writes JSON and a PNG chart
to bench/results/ (bench/report.py).
"""
