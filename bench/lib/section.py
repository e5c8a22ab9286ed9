#!/usr/bin/python3
"""bench/lib/section.py RESULTS.md HEADING SECTION.md

Puts a benchmark's section into bench/RESULTS.md: replaces the section
whose heading line is HEADING (up to the next "## " heading), or appends
it at the end when there is none (bench/pods/run.sh, bench/apps/run.sh)."""
import sys

path, heading, sec = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip("\n") + "\n"
lines = open(path).read().splitlines(keepends=True)
start = next((i for i, l in enumerate(lines) if l.rstrip("\n") == heading), None)
if start is None:
    text = "".join(lines).rstrip("\n") + "\n\n" + sec
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    text = "".join(lines[:start]) + sec + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
open(path, "w").write(text)
