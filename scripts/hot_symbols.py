#!/usr/bin/env python3
"""Writes proxy/hot-symbols.txt: the functions a chat runs through, hottest first.

The linker lays them out together at the start of the `lakehouse` binary's
code (see proxy/build.rs). This runs the benchmark's load (whole answers and
streams through the fake upstream, 16 connections) against `lakehouse` under
callgrind, counts each function's own instructions per request, and keeps
the symbols the binary defines. Run it after changes to the request path:

    scripts/hot_symbols.sh

Needs valgrind and wrk (Debian packages) and a release build; loopback only,
about two minutes.
"""

import argparse
import collections
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's process and load helpers)

HEADER = "# Written by scripts/hot_symbols.py; read by proxy/build.rs. Not edited by hand.\n"


def self_costs(profile):
    """Instructions by function (own code only) in a callgrind profile, mangled names."""
    names, costs = {}, collections.Counter()
    function, in_call = None, False

    def name(text):
        m = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not m:
            return text
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), text)

    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith("fn="):
            function, in_call = name(line[3:]), False
        elif line.startswith("cfn="):
            name(line[4:])
        elif line.startswith("calls="):
            in_call = True
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            fields = line.split()
            if in_call:
                in_call = False  # the cost of a call belongs to the callee
            elif len(fields) > 1 and function:
                costs[function] += int(fields[1])
    return costs


def defined_functions(binary):
    out = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout
    return {p[2] for p in (line.split() for line in out.splitlines()) if len(p) == 3 and p[1] in "tTwW"}


def profile_load(bins, tmp, duration):
    """Per-request own instructions by function over a whole-answer and a streamed load."""
    procs = []
    try:
        fake, fake_url = bench.start_printing([str(bins / "fake-upstream"), "--listen", "127.0.0.1:0"])
        procs.append(fake)
        out = tmp / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}"]
        lakehouse, url = bench.start_lakehouse(bins, tmp, fake_url, wrapper)
        procs.append(lakehouse)
        per_request = collections.Counter()
        for stream in (False, True):
            body = {"model": "bench/gpt-4o", "messages": [{"role": "user", "content": "bench"}], "stream": stream}
            target = f"{url}/v1/chat/completions"
            bench.wrk(target, body, 16, 2, tmp, bench.KEY)  # warm-up, not counted
            subprocess.run(["callgrind_control", "-z", str(lakehouse.pid)], check=True, capture_output=True)
            run = bench.wrk(target, body, 16, duration, tmp, bench.KEY)
            before = set(tmp.glob("callgrind.out.*"))
            subprocess.run(["callgrind_control", "-d", str(lakehouse.pid)], check=True, capture_output=True)
            (dump,) = set(tmp.glob("callgrind.out.*")) - before
            for function, cost in self_costs(dump).items():
                per_request[function] += cost / max(run["requests"], 1)
            print(f"  stream={stream}: {run['requests']} requests profiled", flush=True)
        return per_request
    finally:
        bench.stop_all(procs)


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--out", default=str(root / "proxy" / "hot-symbols.txt"))
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    with tempfile.TemporaryDirectory(prefix="lakehouse-hot-") as tmp:
        costs = profile_load(bins, pathlib.Path(tmp), args.duration)
    defined = defined_functions(bins / "lakehouse")
    hot = [f for f, _ in costs.most_common() if f in defined]
    pathlib.Path(args.out).write_text(HEADER + "".join(f"{f}\n" for f in hot))
    print(f"wrote {len(hot)} symbols to {args.out}")


if __name__ == "__main__":
    main()
