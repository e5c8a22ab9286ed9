#!/usr/bin/python3
"""Before and after of the burst part, one Markdown table:
bench/functions/burst-compare.py LABEL=RESULT_DIR ... (each RESULT_DIR a
bench/out/functions of `FN_PARTS=burst bench/functions/run.sh BUILD`, kept
aside). Rows: each variant, then each run in the order given, so that runs
of the same variant sit together."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import burst_header, burst_row  # noqa: E402


def main():
    runs = []
    for arg in sys.argv[1:]:
        label, d = arg.split("=", 1)
        burst = json.load(open(os.path.join(d, "burst.json")))
        runs.append((label, burst))
    out = burst_header(("concurrency / maxInstances", "function", "build"))
    for i, v0 in enumerate(runs[0][1]["variants"]):
        for label, burst in runs:
            v = burst["variants"][i]
            assert v["app"] == v0["app"], "runs of different variants"
            fn = f"sleeps {v['sleep_s'] * 1000:.0f} ms" if v["sleep_s"] else "hello (no sleep)"
            first = (f"{v['concurrency']} / {v['maxInstances']}", fn, label)
            out.append(burst_row(v, burst["requests"], first))
    print("\n".join(out))


if __name__ == "__main__":
    main()
