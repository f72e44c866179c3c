"""Where supervisord spends its time with the plugin: ``python -m benchmarks.profile``.

Not part of the benchmark run; a tool to look into a missed target.  It
starts the same environment as the benchmark (supervisord with meshx and
twiddler, the Consul double), starts N services (or twiddler programs) and
then, while idle or while a client calls getState or while the starts run:

- CPU of supervisord's main thread vs its other threads (meshx workers,
  timers), from /proc/<pid>/task/<tid>/stat;
- main-loop iterations per second: poll() calls of the main thread, counted
  with ``strace -c`` (when installed) for 5 s after the CPU window;
- a py-spy profile (``pip install py-spy``) summarised by function.

    python -m benchmarks.profile idle --n 1000 --ttl 10000 --seconds 20
    python -m benchmarks.profile getstate --n 1000 --seconds 15
    python -m benchmarks.profile starting --n 1000 --seconds 20
    python -m benchmarks.profile idle --side twiddler --n 1000
    python -m benchmarks.profile idle --no-ttl --n 1000      # the same services without TTL updates
"""
import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import procs
from benchmarks.context import Context
from benchmarks.stats import summary_ms
from benchmarks.workload import getstate_latencies, meshx_start, start_many, twiddler_start


def thread_cpu(pid):
    """{tid: cpu seconds} of every thread of ``pid``."""
    cpu = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / float(procs.CLOCK_TICKS)
        except OSError:
            pass
    return cpu


def summarise_pyspy(path, top=25):
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    total, own, inclusive = 0, collections.Counter(), collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            count = int(count)
            frames = stack.split(";")[1:] or ["<no python frame>"]
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    lines = ["py-spy samples: %d" % total, "-- self"]
    lines += ["%6.1f%%  %s" % (100.0 * n / total, name) for name, n in own.most_common(top)]
    lines += ["-- inclusive"]
    lines += ["%6.1f%%  %s" % (100.0 * n / total, name) for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("phase", choices=("idle", "getstate", "starting"))
    parser.add_argument("--side", choices=("meshx", "twiddler"), default="meshx")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ttl", type=int, default=0, help="TTL update interval (ms) in the start template")
    parser.add_argument("--no-ttl", action="store_true",
                        help="no TTL updates (template ttl {}); meshx.start then does not wait for passing")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", default=None, help="py-spy raw output file (default: a temporary file)")
    args = parser.parse_args(argv)
    procs.install_cleanup()
    ctx = Context(False, 3600)
    template = {"ttl": {"id": "ttl:{{id}}", "status": "passing", "ttl": args.ttl}} if args.ttl else None
    start = meshx_start(template) if args.side == "meshx" else twiddler_start
    if args.no_ttl and args.side == "meshx":
        start = lambda rpc, name: rpc.meshx.start(name, {"ttl": {}}, False, 0)  # noqa: E731
    names = ["pf-%d" % i for i in range(args.n)]
    out = args.out or tempfile.mktemp(prefix="mxb-pyspy-", suffix=".txt", dir="/tmp")
    try:
        with ctx.environment(max_processes=args.n + 10) as (double, server):
            starter = threading.Thread(target=lambda: start_many(
                server, names, start, 50, lambda d, t: ctx.log("  %d/%d started" % (d, t))), daemon=True)
            starter.start()
            if args.phase == "starting":
                time.sleep(3)
            else:
                starter.join()
                time.sleep(3)
            ctx.log("measuring %s for %ds" % (args.phase, args.seconds))
            _measure(ctx, server, double, args, out)
    finally:
        procs.kill_all()


def _measure(ctx, server, double, args, out):
    pid = server.pid
    tools = []
    if shutil.which("py-spy") or os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")):
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        tools.append(("py-spy", subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", "200", "-f", "raw", "-o", out,
             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    cpu0, process0, t0 = thread_cpu(pid), server.cpu_seconds(), time.monotonic()
    puts0 = double.count_requests("PUT")
    gets0 = double.count_requests("GET")
    latencies = []
    while time.monotonic() - t0 < args.seconds:
        if args.phase == "getstate":
            latencies += getstate_latencies(server, 20)
        else:
            time.sleep(0.2)
    cpu1, process1, elapsed = thread_cpu(pid), server.cpu_seconds(), time.monotonic() - t0
    puts = double.count_requests("PUT") - puts0
    gets = double.count_requests("GET") - gets0
    for _name, tool in tools:
        tool.wait(args.seconds + 60)
    main_thread = cpu1.get(pid, 0) - cpu0.get(pid, 0)
    others = sum(cpu1[t] - cpu0.get(t, 0) for t in cpu1 if t != pid)
    print("supervisord %s, N=%d, phase %s, %.0fs" % (args.side, args.n, args.phase, elapsed))
    print("  CPU of one core: process %.1f%%, main thread %.1f%%, other threads %.1f%% (%d threads)"
          % (100 * (process1 - process0) / elapsed, 100 * main_thread / elapsed, 100 * others / elapsed, len(cpu1)))
    print("  Consul requests/s: PUT %.1f, GET %.1f" % (puts / elapsed, gets / elapsed))
    if latencies:
        print("  getState: %s" % summary_ms(latencies))
    if shutil.which("strace"):
        # after the CPU window: ptrace slows the traced thread down
        strace_out, window = out + ".strace", 5
        subprocess.run(["timeout", "-s", "INT", str(window), "strace", "-c", "-e", "trace=poll", "-p", str(pid),
                        "-o", strace_out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(strace_out) as f:
            for line in f:
                if line.strip().endswith("poll"):
                    calls = int(line.split()[3])
                    print("  main loop: %d poll() calls in %ds = %.0f iterations/s" % (calls, window, calls / window))
        os.remove(strace_out)
    if os.path.exists(out):
        print(summarise_pyspy(out))
        print("(py-spy raw profile: %s)" % out)


if __name__ == "__main__":
    main()
