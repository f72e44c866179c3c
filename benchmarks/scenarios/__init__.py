"""The five scenarios, in the order they run; each ``run(ctx)`` returns
{name, rows, details} (rows: see ``benchmarks.context.row``)."""
from benchmarks.scenarios import crash_restart, scale, slow_agent, start_latency, steady_state

ALL = [start_latency, scale, crash_restart, steady_state, slow_agent]
