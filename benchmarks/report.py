"""The machine description, the results table (text and Markdown) and the JSON document."""
import json
import os
import platform
import resource
import sys
from importlib import metadata

COLUMNS = ("metric", "unit", "meshx", "baseline", "ratio", "target", "met")


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "supervisor": _version("supervisor"),
        "supervisor_twiddler": _version("supervisor_twiddler"),
        "supervisor_meshx": _version("supervisor-meshx"),
        "kernel": platform.release(),
        "rlimit_nofile": [soft, hard],
    }


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cell(value):
    if value is None:
        return "-"
    if value is True:
        return "MET"
    if value is False:
        return "NOT MET"
    if isinstance(value, float):
        return "%.3f" % value if abs(value) < 10 else "%.1f" % value
    return str(value)


def _rows(results):
    for result in results:
        if "error" in result:
            yield result["name"], {"metric": "error: " + result["error"]}
        for r in result.get("rows", []):
            yield result["name"], r


def text_table(results):
    lines = []
    widths = [44, 5, 11, 11, 7, 18, 7]
    header = "  ".join(h.ljust(w) for h, w in zip(("scenario / metric", "unit", "meshx", "baseline", "ratio",
                                                     "target", "met"), widths))
    current = None
    lines.append(header)
    lines.append("-" * len(header))
    for name, r in _rows(results):
        if name != current:
            lines.append(name)
            current = name
        cells = [("  " + r.get("metric", ""))] + [_cell(r.get(c)) for c in COLUMNS[1:]]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def markdown_table(results):
    lines = ["| scenario | metric | unit | meshx | baseline | ratio | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in _rows(results):
        cells = [name, r.get("metric", "")] + [_cell(r.get(c)) for c in COLUMNS[1:]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_json(path, document):
    with open(path, "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")
