"""The scenarios, in the order they run; each ``run(ctx)`` returns
{name, rows, details} (rows: see ``benchmarks.context.row``).  Issue 13's seven targets:
1 and its unix socket variant in start_latency, 2 5 6 7 in at_scale, 3 in crash_restart, 4 in slow_agent."""
from benchmarks.scenarios import at_scale, crash_restart, slow_agent, start_latency

ALL = [start_latency, start_latency.Unix, at_scale, crash_restart, slow_agent]
