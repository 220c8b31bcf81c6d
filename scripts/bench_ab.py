#!/usr/bin/env python3
"""A/B of Lakehouse builds or settings under one load, for changes too small
for the full benchmarks (bench.sh) to separate from the machine's drift.

Each variant is a folder holding a `lakehouse` binary, optionally with more
`[server]` settings and environment. All run against one zero-delay fake
upstream, in interleaved rounds (each round runs every variant once, in
turn), so that a machine drifting during the run moves them alike. Printed
per round and as medians over the rounds: req/s, p50, and the CPU time per
chat of Lakehouse's processes and of the fake upstream (what a variant makes
the upstream do counts too: both share the machine's cores).

  source scripts/build_env.sh   # then build the variants
  scripts/bench_ab.py --variant head=/tmp/head-build --variant new="$CARGO_TARGET_DIR/release"
  scripts/bench_ab.py --variant a=DIR --variant b=DIR --server 'b=recent_requests = 1'
  scripts/bench_ab.py --variant a=DIR --variant b=DIR --env b=RUST_LOG=info --stream

A difference smaller than the spread of the rounds (shown) is not one.
"""

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402


def pairs(values, what):
    """`name=value` arguments as (name, value), names checked against `what`."""
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {value!r}")
        if what is not None and name not in what:
            raise SystemExit(f"{value!r} names no --variant")
        out.append((name, rest))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=DIR",
                        help="a folder holding a lakehouse binary (repeat, two or more)")
    parser.add_argument("--server", action="append", default=[], metavar="NAME=SETTING",
                        help="a [server] setting line for one variant (repeatable; "
                             "worker_threads is WORKERS's, as in bench.sh)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=KEY=VALUE",
                        help="an environment variable for one variant (repeatable)")
    parser.add_argument("--upstream", type=pathlib.Path,
                        help="the fake-upstream binary (default: the first variant's folder)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4, help="of load per variant and round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="streamed chats")
    parser.add_argument("--conversation", action="store_true",
                        help="a 41-message (~40 KB) conversation instead of one short message")
    parser.add_argument("--content", default="bench",
                        help="the short message's text; fake-upstream directives in it shape the "
                             "upstream (e.g. '#slow_first=20' answers after 20 ms, "
                             "'#chunks=10 #slow_chunks=20' streams 10 chunks 20 ms apart)")
    args = parser.parse_args()

    variants = pairs(args.variant, None)
    names = [name for name, _ in variants]
    if len(variants) < 2 or len(set(names)) != len(names):
        raise SystemExit("give two or more --variant, each with its own name")
    settings = {name: [] for name in names}
    for name, line in pairs(args.server, names):
        if line.split("=", 1)[0].strip() == "worker_threads":
            raise SystemExit("worker_threads is set for every variant by WORKERS (default 1)")
        settings[name].append(line)
    envs = {name: {} for name in names}
    for name, assignment in pairs(args.env, names):
        key, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=KEY=VALUE, got {name}={assignment!r}")
        envs[name][key] = value
    upstream = args.upstream or pathlib.Path(variants[0][1]) / "fake-upstream"
    for name, folder in variants:
        if not (pathlib.Path(folder) / "lakehouse").is_file():
            raise SystemExit(f"{name}: no lakehouse binary in {folder}")
    if not upstream.is_file():
        raise SystemExit(f"no fake-upstream at {upstream}; pass --upstream")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lakehouse-ab-"))
    procs = []
    try:
        fake, fake_url = bench.start_printing([str(upstream), "--listen", "127.0.0.1:0"])
        procs.append(fake)
        targets = []
        for name, folder in variants:
            home = tmp / name
            home.mkdir()
            proc, url = bench.start_lakehouse(pathlib.Path(folder), home, fake_url,
                                              server="\n".join(settings[name]), env=envs[name])
            procs.append(proc)
            targets.append((name, f"{url}/v1/chat/completions", proc.pid, home))
        messages = bench.CONVERSATION if args.conversation else [{"role": "user", "content": args.content}]
        body = {"model": "bench/gpt-4o", "messages": messages, "stream": args.stream}
        for _, url, _, home in targets:
            bench.wrk(url, body, args.connections, 1, home, bench.KEY)  # warm-up
        rows = {name: [] for name in names}
        for r in range(args.rounds):
            for name, url, pid, home in targets:
                run = bench.measured_wrk(url, body, args.connections, args.seconds, home, bench.KEY, pid, fake.pid)
                row = (run["rps"], run["p50"], run["cpu_us_per_req"], run["upstream_cpu_us_per_req"])
                rows[name].append(row)
                print(f"round {r}  {name:12s} {row[0]:8.0f} req/s  p50 {row[1]:5.0f} us  "
                      f"lakehouse {row[2]:6.2f} us/chat  upstream {row[3]:6.2f} us/chat", flush=True)
        print(f"\nmedians over {args.rounds} rounds (min-max of Lakehouse's CPU per chat):")
        for name in names:
            column = list(zip(*rows[name]))
            median = [statistics.median(c) for c in column]
            print(f"  {name:12s} {median[0]:8.0f} req/s  p50 {median[1]:5.0f} us  "
                  f"lakehouse {median[2]:6.2f} us/chat ({min(column[2]):.2f}-{max(column[2]):.2f})  "
                  f"upstream {median[3]:6.2f} us/chat")
    finally:
        bench.stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
