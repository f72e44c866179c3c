"""python -m benchmarks [--quick] [--json FILE]

Runs the five scenarios, which measure issue 13's seven targets (progress lines
on stderr), then prints the table and the JSON document on stdout.  The whole
run has a hard budget (full: under 15 minutes, --quick: about 4); a scenario that would not fit is skipped and
reported as such.  Every process started is killed at the end, on errors and
on SIGTERM/SIGHUP/Ctrl-C.
"""
import argparse
import json
import signal
import sys
import time
import traceback

from benchmarks import procs, report
from benchmarks.context import BudgetExceeded, Context, HardLimit
from benchmarks.scenarios import ALL

BUDGET_S = {"full": 900.0, "quick": 240.0}  # for the scenarios; clean-up comes on top
HARD_LIMIT_S = {"full": 960.0, "quick": 280.0}  # the alarm that stops whatever runs


def _alarm(_signum, _frame):
    raise HardLimit("hard time limit reached")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="smaller N and shorter windows (~2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON document to FILE")
    parser.add_argument("--only", metavar="K", type=int, action="append",
                        help="run only scenario K (1-5); may be repeated")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"

    procs.install_cleanup()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(HARD_LIMIT_S[mode]))
    ctx = Context(args.quick, BUDGET_S[mode])
    machine = report.machine()
    ctx.log("mode %s, budget %.0fs; %d cores (%s), python %s, supervisor %s, twiddler %s"
            % (mode, BUDGET_S[mode], machine["nproc"], machine["cpu_model"], machine["python"],
               machine["supervisor"], machine["supervisor_twiddler"]))
    results = []
    try:
        for number, scenario in enumerate(ALL, 1):
            if args.only and number not in args.only:
                continue
            ctx.log("scenario %s" % scenario.NAME)
            began = time.monotonic()
            ctx.partial = None
            hard_limit = False
            try:
                result = scenario.run(ctx)
            except (BudgetExceeded, HardLimit) as exc:
                hard_limit = isinstance(exc, HardLimit)
                result = {"name": scenario.NAME, "error": "skipped or cut short: %s" % exc}
            except Exception as exc:
                traceback.print_exc()
                result = {"name": scenario.NAME, "error": "%s: %s" % (type(exc).__name__, exc)}
            if "error" in result and ctx.partial is not None:
                partial = ctx.partial()  # the part of the scenario that finished
                result.update(rows=partial["rows"], details=partial["details"])
            result["elapsed_s"] = round(time.monotonic() - began, 1)
            results.append(result)
            ctx.log("scenario %s done in %.1fs%s" % (scenario.NAME, result["elapsed_s"],
                                                    " (%s)" % result["error"] if "error" in result else ""))
            if hard_limit:
                break
    finally:
        signal.alarm(0)
        procs.kill_all()
    document = {
        "mode": mode,
        "machine": machine,
        "elapsed_s": round(time.monotonic() - ctx.began, 1),
        "scenarios": results,
        "consul_double_tracebacks": ctx.double_errors,
        "targets": [dict(r, scenario=res["name"]) for res in results for r in res.get("rows", [])
                    if r.get("target")],
    }
    print(report.text_table(results))
    print()
    print(json.dumps(document, indent=2, sort_keys=True))
    if args.json:
        report.write_json(args.json, document)
    ctx.log("finished in %.1fs" % document["elapsed_s"])
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
