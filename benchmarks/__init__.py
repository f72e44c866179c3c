"""Benchmark harness for supervisor-meshx: ``python -m benchmarks [--quick] [--json FILE]``.

Every scenario runs the plugin and its baseline (supervisor_twiddler, plain
supervisord programs, or the same work done by hand from a client) in the same
run, against real supervisord processes and the Consul agent double, all on
127.0.0.1 and unix sockets.  Results and findings: benchmarks/RESULTS.md.

Modules, one job each:
  stats        medians, percentiles, ratios
  procs        the processes the harness started: /proc readings and clean-up
  consul       the Consul double in a child process, and a by-hand Consul client
  server       one supervisord (meshx + twiddler loaded) in a short /tmp directory
  context      mode, time budget, progress lines, environments (double + supervisord)
  workload     starting many services or programs with concurrent clients; timing loops
  scenarios    the five scenarios, one module each
  report       the machine, the table and the JSON document
  profile      not part of the run: where supervisord's time goes (py-spy, /proc, strace)
"""
