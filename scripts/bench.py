#!/usr/bin/env python3
"""Side-by-side benchmarks in one run on one machine (see bench.sh).

Sections (all loopback, bounded in time):
  proxy      the zero-delay fake upstream called directly, through Lakehouse, through
             nginx proxy_pass (same worker count) and through the LiteLLM proxy, at
             several connection counts, non-stream and stream (wrk). With targets
             `floor`, `floor_json` and `floor_typed`, also through `proxy-floor`
             (non-stream only): the bare axum hop with Lakehouse's upstream client,
             bytes passed, JSON re-encoded through `serde_json::Value`, or read into
             borrowed OpenAI-shaped structs and encoded again, i.e. what the stack
             costs before Lakehouse does anything.
             Every run records the CPU time per request of the target's processes
             and of the fake upstream.
  streaming  time to first token added by the proxy, and chunk spacing: an upstream
             emitting N chunks every G ms must reach the client as N SSE events G ms apart.
  retrieval  pre-hook latency over 3 corpora x ROWS vectors (embedder reported apart),
             HNSW recall@10 vs exact, ingest vs DuckDB COPY, idle and loaded RSS.
Writes bench/results/<stamp>.json, <stamp>.md and PNG plots next to them.
"""

import argparse
import datetime
import http.client
import json
import os
import pathlib
import re
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

KEY = "sk-bench"
LITELLM_KEY = "sk-litellm-bench"
# nginx worker_processes and Lakehouse tokio worker threads, the same for both. On the
# 2-core bench machine the load generator and the fake upstream need the other core.
WORKERS = int(os.environ.get("WORKERS", "1"))
PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9]
TARGETS = {
    "c1_added_p50_us": 50,
    "rps_over_nginx": 0.8,
    "added_p50_over_nginx": 2.0,
    "rps_over_litellm": 100,
    "ttft_added_p99_us": 1000,
    "prehook_p99_ms": 2.0,
}


# The `proxy-floor` references (non-stream only), by their `--mode`.
FLOORS = {"floor": "pass", "floor_json": "json", "floor_typed": "typed"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_printing(args, env=None):
    """Starts a binary that prints `... listening on <url>` first; returns (proc, url)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start: {line!r}")
    return proc, line.strip().split("listening on ", 1)[1]


def wait_http(url, timeout=120, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout} s")


def start_nginx(tmp, upstream_port):
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {WORKERS};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # The 40 KB conversation stays in memory (the default 16 KB buffer spills
  # every such body to a temp file); the temp path is ours either way.
  client_body_buffer_size 128k;
  client_body_temp_path {tmp}/nginx-body;
  upstream fake {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_fake/stats")
    return proc, url


def start_litellm(tmp, venv, fake_url):
    port = free_port()
    conf = tmp / "litellm.yaml"
    conf.write_text(
        f"""
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {fake_url}/openai/v1
      api_key: {KEY}
general_settings:
  master_key: {LITELLM_KEY}
litellm_settings:
  telemetry: false
"""
    )
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", NO_PROXY="*")
    log = open(tmp / "litellm.log", "w")
    proc = subprocess.Popen(
        [str(venv / "bin" / "litellm"), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(WORKERS)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", timeout=180)
    return proc, url


def start_lakehouse(bins, tmp, fake_url, wrapper=(), server="", env=None):
    """Lakehouse against the fake upstream; `wrapper` is a command to run it under
    (e.g. valgrind), `server` more `[server]` settings, `env` more environment."""
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "bench.env").write_text(f"BENCH_API_KEY={KEY}\n")
    (secrets / "bench.env").chmod(0o600)
    (tmp / "lakehouse.toml").write_text(
        f"""
secrets_dir = "secrets"
[server]
worker_threads = {WORKERS}
{server}
[store]
backend = "local"
root = "data"
[providers.ollama]
enabled = false
[[providers.custom]]
name = "bench"
base_url = "{fake_url}/openai/v1"
key_file = "secrets/bench.env"
"""
    )
    env = {**os.environ, "RUST_LOG": "warn", **(env or {})}
    return start_printing([*wrapper, str(bins / "lakehouse"), "serve", "--config", str(tmp / "lakehouse.toml"), "--listen", "127.0.0.1:0"], env)


def stop_all(procs):
    """Terminates every process (killing those that linger) and empties the list."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=35)
        except subprocess.TimeoutExpired:
            p.kill()
    procs.clear()


HALT_POLL = pathlib.Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def idle_policy():
    """How this machine's idle CPUs wait: in a VM whose guest halts at once
    (halt polling 0 ns), every wakeup of an idle vCPU is a VM exit, which at
    one connection costs more than the proxy hop itself."""
    def read(path):
        try:
            return pathlib.Path(path).read_text().strip()
        except OSError:
            return None
    return {
        "cpuidle_governor": read("/sys/devices/system/cpu/cpuidle/current_governor"),
        "guest_halt_poll_ns": read(HALT_POLL),
    }


def pgo_profile():
    """The profile the Rust binaries were optimised with, as scripts/build_env.sh
    passed it (its content hash), or None for a build without one."""
    # rustc takes the last of several.
    found = re.findall(r"-Cprofile-use=\S*/([0-9a-f]+)\.profdata", os.environ.get("RUSTFLAGS", ""))
    return found[-1] if found else None


def set_halt_poll(ns):
    """Sets the guest's halt polling (root, cpuidle-haltpoll guests only);
    returns the value it replaced, to put back after the run."""
    previous = HALT_POLL.read_text().strip()
    HALT_POLL.write_text(str(ns))
    return previous


def rss_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def settle(busy_below=0.1, window=0.2, limit=5.0):
    """Waits (at most `limit` s) until the machine is idle: a run right after
    another target's (LiteLLM's Python workers finish their backlog for up to
    a second) would otherwise pay for its leftovers."""
    def busy_and_total():
        idle, total = machine_idle()
        return total - idle, total
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        b0, t0 = busy_and_total()
        time.sleep(window)
        b1, t1 = busy_and_total()
        if t1 > t0 and (b1 - b0) / (t1 - t0) < busy_below:
            return


def wrk(url, body, connections, duration, tmp, token):
    script = tmp / "post.lua"
    pcts = ",".join(f"latency:percentile({p})" for p in PERCENTILES)
    script.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
        "done = function(summary, latency, requests)\n"
        f"  local p = {{{pcts}}}\n"
        "  io.write(string.format('JSON {\"requests\":%d,\"errors\":%d,\"non2xx\":%d,\"duration_us\":%d,\"pcts\":[%s]}\\n',\n"
        "    summary.requests,\n"
        "    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,\n"
        "    summary.errors.status, summary.duration, table.concat(p, ',')))\n"
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^JSON (.*)$", out, re.M)
    if not match:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    r = json.loads(match.group(1))
    r["percentiles_us"] = dict(zip([str(p) for p in PERCENTILES], r.pop("pcts")))
    r["p50"] = r["percentiles_us"]["50"]
    r["p99"] = r["percentiles_us"]["99"]
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def process_tree(pid):
    """`pid` and its descendants (nginx's and LiteLLM's workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for c in pathlib.Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return pids


def machine_idle():
    """The machine's idle and total CPU time so far, in clock ticks."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def children_cpu_seconds():
    """User and system CPU time of this script's finished children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid):
    """User and system CPU time of `pid`'s process tree, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = pathlib.Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def measured_wrk(url, body, conns, duration, tmp, token, proxy_pid, upstream_pid):
    """One wrk run on a settled machine, with the CPU time per request of the
    proxy's processes (`proxy_pid`'s tree), of the fake upstream and of wrk,
    and the share of the machine left idle."""
    settle()
    proxy_cpu, upstream_cpu = cpu_seconds(proxy_pid), cpu_seconds(upstream_pid)
    loadgen_cpu, (idle, total) = children_cpu_seconds(), machine_idle()
    r = wrk(url, body, conns, duration, tmp, token)
    served = max(r["requests"], 1)
    r["cpu_us_per_req"] = round((cpu_seconds(proxy_pid) - proxy_cpu) / served * 1e6, 1)
    r["upstream_cpu_us_per_req"] = round((cpu_seconds(upstream_pid) - upstream_cpu) / served * 1e6, 1)
    r["loadgen_cpu_us_per_req"] = round((children_cpu_seconds() - loadgen_cpu) / served * 1e6, 1)
    idle_after, total_after = machine_idle()
    r["idle_pct"] = round(100 * (idle_after - idle) / max(total_after - total, 1), 1)
    return r


def proxy_section(targets, pids, upstream_pid, levels, duration, rounds, tmp):
    """Every target at every level, `rounds` times, interleaved.

    Each run also records the CPU time per request of the target's processes
    (`pids[name]`, with its workers), of the fake upstream and of wrk, and
    the share of the machine left idle: on 2 shared cores the throughput
    ratios hide what each hop costs, and a proxy that makes the upstream or
    the load generator work harder, or leaves cores waiting, shows there.

    This VM's throughput drifts by tens of percent from one minute to the
    next, so one run per target would compare machines, not proxies. Each
    round runs every target once, in a rotated order, and each figure of the
    summary is the median over rounds of a comparison made inside one round.
    The rows shown per target are its median round by req/s."""
    results, per_round = {}, {}
    names = list(targets)
    cases = [("non_stream", c) for c in levels] + [("stream", c) for c in levels]
    # What agents send: a conversation of ~40 KB (the whole answer is short).
    # The body's bytes cost every hop in proportion; parsing them and writing
    # them again (and to the observer log) is the proxy's share.
    cases.append(("conversation_40k", 16))
    for mode, conns in cases:
        case = f"{mode}/c{conns}"
        runs = {name: [] for name in names}
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                if mode == "stream" and name in FLOORS:
                    continue
                url, model, token = targets[name]
                messages = CONVERSATION if mode == "conversation_40k" else [{"role": "user", "content": "bench"}]
                body = {"model": model, "messages": messages, "stream": mode == "stream"}
                if i == 0:
                    wrk(url, body, conns, 1, tmp, token)  # warm-up: connections, pools, caches
                r = measured_wrk(url, body, conns, duration, tmp, token, pids[name], upstream_pid)
                runs[name].append(r)
                print(f"  {case} round {i + 1} {name}: p50 {r['p50']} us, {r['rps']:.0f} req/s", flush=True)
        runs = {name: rs for name, rs in runs.items() if rs}
        per_round[case] = runs
        results[case] = {name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for name, rs in runs.items()}
    summary = {case: summarize(runs) for case, runs in per_round.items()}
    return results, summary


CONVERSATION = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": ("Lorem ipsum dolor sit amet, \"quoted\".\n" * 25)[:1000]}
    for i in range(41)
]


def summarize(runs):
    """Medians over rounds of each in-round comparison with the direct run (and nginx, LiteLLM)."""
    direct = runs["direct"]
    s = {}

    def put(key, values):
        s[key] = statistics.median(values)
        s[f"{key}_rounds"] = values

    for name, rs in runs.items():
        if name == "direct":
            continue
        put(f"{name}_added_p50_us", [r["p50"] - d["p50"] for r, d in zip(rs, direct)])
        put(f"{name}_added_p99_us", [r["p99"] - d["p99"] for r, d in zip(rs, direct)])
        s[f"{name}_rps"] = statistics.median(r["rps"] for r in rs)
    for name, rs in runs.items():
        if all("cpu_us_per_req" in r for r in rs):
            put(f"{name}_cpu_us", [r["cpu_us_per_req"] for r in rs])
            put(f"{name}_upstream_cpu_us", [r["upstream_cpu_us_per_req"] for r in rs])
        if all("loadgen_cpu_us_per_req" in r for r in rs):
            put(f"{name}_loadgen_cpu_us", [r["loadgen_cpu_us_per_req"] for r in rs])
            put(f"{name}_idle_pct", [r["idle_pct"] for r in rs])
    lh = runs.get("lakehouse")
    if lh and "nginx" in runs:
        nginx = runs["nginx"]
        put("lakehouse_rps_over_nginx", [round(l["rps"] / n["rps"], 3) for l, n in zip(lh, nginx)])
        if "lakehouse_cpu_us" in s and "nginx_cpu_us" in s:
            put("lakehouse_cpu_over_nginx", [round(l["cpu_us_per_req"] / max(n["cpu_us_per_req"], 0.1), 2) for l, n in zip(lh, nginx)])
        put(
            "lakehouse_added_p50_over_nginx",
            [round((l["p50"] - d["p50"]) / max(n["p50"] - d["p50"], 1), 2) for l, n, d in zip(lh, nginx, direct)],
        )
    for floor in FLOORS:
        if floor in runs and "nginx" in runs:
            put(f"{floor}_rps_over_nginx", [round(f["rps"] / n["rps"], 3) for f, n in zip(runs[floor], runs["nginx"])])
        if floor in runs and lh:
            put(f"lakehouse_rps_over_{floor}", [round(l["rps"] / f["rps"], 3) for l, f in zip(lh, runs[floor])])
    if lh and "litellm" in runs and all(r["rps"] > 0 for r in runs["litellm"]):
        put("lakehouse_rps_over_litellm", [round(l["rps"] / m["rps"], 1) for l, m in zip(lh, runs["litellm"])])
    return s


def sse_events(base, path, model, prompt, token):
    """One streamed chat; returns (time to first data event, arrival times of content events)."""
    host = base.split("://", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True})
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    first = None
    arrivals = []
    buffer = b""
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        now = time.perf_counter()
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if first is None:
                    first = now - started
                if data == b"[DONE]":
                    continue
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    arrivals.append(now)
    conn.close()
    return first, arrivals


def streaming_section(targets, samples, chunks, gap_ms):
    """TTFT samples taken target after target within each sample, so a drift of
    the machine's speed hits every target alike; then one paced stream each."""
    out = {}
    # (origin, path, model, token) per target: sse_events speaks to an origin.
    ends = {}
    for name, (url, model, token) in targets.items():
        base = url[: url.index("/", url.index("//") + 2)]
        ends[name] = (base, url[len(base):], model, token)
    ttfts = {name: [] for name in targets}
    for _ in range(samples):
        for name, (base, path, model, token) in ends.items():
            first, _ = sse_events(base, path, model, "bench", token)
            ttfts[name].append(first * 1e6)
    for name, (base, path, model, token) in ends.items():
        ttfts[name].sort()
        _, arrivals = sse_events(base, path, model, f"bench #chunks={chunks} #slow_chunks={gap_ms}", token)
        gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
        out[name] = {
            "ttft_p50_us": ttfts[name][len(ttfts[name]) // 2],
            "ttft_p99_us": ttfts[name][min(len(ttfts[name]) - 1, int(len(ttfts[name]) * 0.99))],
            "chunks_sent": chunks,
            "events_received": len(arrivals),
            "gap_ms_median": statistics.median(gaps) if gaps else None,
            "gap_ms_min": min(gaps) if gaps else None,
            "gap_ms_max": max(gaps) if gaps else None,
        }
        print(f"  {name}: ttft p50 {out[name]['ttft_p50_us']:.0f} us, {len(arrivals)}/{chunks} events, median gap {out[name]['gap_ms_median']}", flush=True)
    direct = out["direct"]
    for name, r in out.items():
        if name != "direct":
            r["ttft_added_p50_us"] = r["ttft_p50_us"] - direct["ttft_p50_us"]
            r["ttft_added_p99_us"] = r["ttft_p99_us"] - direct["ttft_p99_us"]
    return out


def run_json(args):
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def retrieval_section(bins, rows, queries):
    examples = bins / "examples"
    return {
        "hnsw": run_json([str(examples / "bench_hnsw"), str(rows), "1000"]),
        "ingest": run_json([str(examples / "bench_ingest"), os.environ.get("INGEST_ROWS", "1000000")]),
        "prehook": run_json([str(examples / "bench_prehook"), str(rows), str(queries)]),
    }


def plots(results, out_base):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots")
        return []
    files = []
    for mode in ["non_stream", "stream"]:
        cases = [c for c in results if c.startswith(mode)]
        fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
        for ax, case in zip(axes[0], cases):
            for name, r in results[case].items():
                xs = [v / 1000 for v in r["percentiles_us"].values()]
                ys = [float(p) / 100 for p in r["percentiles_us"]]
                ax.plot(xs, ys, marker=".", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(case)
            ax.grid(True, alpha=0.3)
            ax.legend()
        files.append(save(plt, fig, f"{out_base}-latency-cdf-{mode}.png"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ["non_stream", "stream"]):
        cases = sorted((c for c in results if c.startswith(mode)), key=lambda c: int(c.split("/c")[1]))
        levels = [int(c.split("/c")[1]) for c in cases]
        for name in results[cases[0]]:
            ax.plot(levels, [results[c][name]["rps"] for c in cases], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel("requests/s (log)")
        ax.set_title(f"throughput, {mode}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    files.append(save(plt, fig, f"{out_base}-throughput.png"))
    return files


def save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict(value, target, higher_is_better):
    if value is None:
        return "n/a"
    return "met" if (value >= target if higher_is_better else value <= target) else "MISSED"


def markdown(report):
    idle = report.get("idle", {})
    lines = [
        f"# Benchmarks {report['stamp']}",
        "",
        f"{report['cores']} cores, {WORKERS} worker(s) for nginx, Lakehouse and LiteLLM; loopback only;"
        f" cpuidle governor {idle.get('cpuidle_governor') or 'unknown'}, guest halt polling {idle.get('guest_halt_poll_ns') or 'n/a'} ns.",
        f"Rust binaries built {'with the profile ' + report['pgo'] + ' (pgo/README.md)' if report.get('pgo') else 'without a profile (no PGO)'}.",
        "",
    ]
    proxy = report.get("proxy")
    if proxy:
        rounds = proxy.get("rounds", 1)
        lines += [
            "## Proxy overhead (wrk, zero-delay fake upstream)",
            "",
            f"{rounds} interleaved round(s) per case, {proxy['duration_s']} s each; rows show each target's median round by req/s.",
            "",
            "| case | target | p50 µs | p99 µs | req/s | errors |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for case, row in proxy["results"].items():
            for name, r in row.items():
                lines.append(f"| {case} | {name} | {r['p50']} | {r['p99']} | {r['rps']:.0f} | {r['errors'] + r['non2xx']} |")
        lines += [
            "",
            "Medians over rounds of in-round comparisons (each round's values in brackets).",
            "",
            "| case | LH added p50 µs | nginx added p50 µs | LH/nginx added p50 | LH/nginx req/s | LH/LiteLLM req/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]

        def cell(s, key, fmt):
            if key not in s:
                return "n/a"
            each = ", ".join(format(v, fmt) for v in s.get(f"{key}_rounds", []))
            return f"{format(s[key], fmt)} [{each}]"

        for case, s in proxy["summary"].items():
            lines.append(
                f"| {case} | {cell(s, 'lakehouse_added_p50_us', '.0f')} | {cell(s, 'nginx_added_p50_us', '.0f')} | "
                f"{cell(s, 'lakehouse_added_p50_over_nginx', '.2f')} | {cell(s, 'lakehouse_rps_over_nginx', '.2f')} | "
                f"{cell(s, 'lakehouse_rps_over_litellm', '.0f')} |"
            )
        floors = [(case, s) for case, s in proxy["summary"].items() if "floor_rps_over_nginx" in s]
        if floors:
            lines += [
                "",
                "Reference floor: `proxy-floor`, the bare axum hop with Lakehouse's upstream client: bytes passed (floor),"
                " JSON parsed into `serde_json::Value` and encoded again both ways (floor_json), or read into borrowed"
                " OpenAI-shaped structs and encoded again (floor_typed).",
                "",
                "| case | floor/nginx req/s | floor_json/nginx req/s | floor_typed/nginx req/s | LH/floor_typed req/s |",
                "|---|---:|---:|---:|---:|",
            ]
            for case, s in floors:
                lines.append(
                    f"| {case} | {cell(s, 'floor_rps_over_nginx', '.2f')} | {cell(s, 'floor_json_rps_over_nginx', '.2f')} | "
                    f"{cell(s, 'floor_typed_rps_over_nginx', '.2f')} | {cell(s, 'lakehouse_rps_over_floor_typed', '.2f')} |"
                )
        cpu_rows = [(case, s) for case, s in proxy["summary"].items() if "lakehouse_cpu_us" in s]
        if cpu_rows:
            names = [n for n in ["lakehouse", "nginx", *FLOORS] if any(f"{n}_cpu_us" in s for _, s in cpu_rows)]
            lines += [
                "",
                "CPU time per request (user + system, µs) of each proxy's processes, and of the fake upstream"
                " behind it (`direct`: the upstream alone); medians over rounds.",
                "",
                "| case | " + " | ".join(f"{n} µs" for n in names) + " | LH/nginx | upstream µs: " + " / ".join(["direct"] + names) + " |",
                "|---|" + "---:|" * (len(names) + 2),
            ]
            for case, s in cpu_rows:
                proxies = " | ".join(cell(s, f"{n}_cpu_us", ".1f") if f"{n}_cpu_us" in s else "n/a" for n in names)
                upstream = " / ".join(
                    format(s[f"{n}_upstream_cpu_us"], ".1f") if f"{n}_upstream_cpu_us" in s else "n/a" for n in ["direct"] + names
                )
                lines.append(f"| {case} | {proxies} | {cell(s, 'lakehouse_cpu_over_nginx', '.2f')} | {upstream} |")
        budget_rows = [(case, s) for case, s in proxy["summary"].items() if "lakehouse_idle_pct" in s]
        if budget_rows:
            lines += [
                "",
                "Where the machine's time went, per request: CPU µs of the proxy, the fake upstream and wrk (medians"
                " over rounds), their sum, and the share of both cores left idle. Throughput is about"
                " busy cores / sum: a proxy costs through its own CPU, through the work it makes the others do,"
                " and through the cores it leaves waiting.",
                "",
                "| case | target | proxy µs | upstream µs | wrk µs | sum µs | idle % |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
            for case, s in budget_rows:
                for n in ["direct", "nginx", "lakehouse", *FLOORS, "litellm"]:
                    if f"{n}_idle_pct" not in s:
                        continue
                    # `direct`'s own CPU is the upstream's.
                    own = 0.0 if n == "direct" else s.get(f"{n}_cpu_us", 0.0)
                    parts = [own, s[f"{n}_upstream_cpu_us"], s[f"{n}_loadgen_cpu_us"]]
                    proxy_cell = "-" if n == "direct" else format(parts[0], ".1f")
                    lines.append(
                        f"| {case} | {n} | {proxy_cell} | {parts[1]:.1f} | {parts[2]:.1f} | {sum(parts):.1f} | {s[f'{n}_idle_pct']:.1f} |"
                    )
    streaming = report.get("streaming")
    if streaming:
        lines += ["", "## Streaming", "", "| target | TTFT p50 µs | TTFT p99 µs | added p99 µs | events / chunks | gap median ms (min..max) |", "|---|---:|---:|---:|---:|---|"]
        for name, r in streaming.items():
            lines.append(
                f"| {name} | {r['ttft_p50_us']:.0f} | {r['ttft_p99_us']:.0f} | {r.get('ttft_added_p99_us', 0):.0f} | "
                f"{r['events_received']} / {r['chunks_sent']} | {r['gap_ms_median']:.1f} ({r['gap_ms_min']:.1f}..{r['gap_ms_max']:.1f}) |"
            )
    retrieval = report.get("retrieval")
    if retrieval:
        lines += ["", "## Retrieval", "", "```json", json.dumps(retrieval, indent=2), "```"]
    lines += ["", "## Targets", "", "| figure | value | target | |", "|---|---:|---:|---|"]
    for row in report["targets"]:
        lines.append(f"| {row['figure']} | {row['value']} | {row['target']} | {row['verdict']} |")
    if report.get("plots"):
        lines += [""] + [f"![{pathlib.Path(p).name}]({pathlib.Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def targets_table(report):
    rows = []

    def add(figure, value, target, higher):
        rows.append({"figure": figure, "value": None if value is None else round(value, 3), "target": target, "verdict": verdict(value, target, higher)})

    proxy = report.get("proxy")
    if proxy:
        s = proxy["summary"]
        add("non-stream c1 added p50 (µs)", s.get("non_stream/c1", {}).get("lakehouse_added_p50_us"), TARGETS["c1_added_p50_us"], False)
        for case in s:
            # The targets are for the plain chat; the conversation is reported, not judged.
            if case.endswith("/c1") or case.startswith("conversation"):
                continue
            add(f"{case} req/s Lakehouse/nginx", s[case].get("lakehouse_rps_over_nginx"), TARGETS["rps_over_nginx"], True)
            add(f"{case} added p50 Lakehouse/nginx", s[case].get("lakehouse_added_p50_over_nginx"), TARGETS["added_p50_over_nginx"], False)
            if "lakehouse_rps_over_litellm" in s[case]:
                add(f"{case} req/s Lakehouse/LiteLLM", s[case]["lakehouse_rps_over_litellm"], TARGETS["rps_over_litellm"], True)
    streaming = report.get("streaming")
    if streaming and "lakehouse" in streaming:
        add("TTFT added p99 (µs)", streaming["lakehouse"]["ttft_added_p99_us"], TARGETS["ttft_added_p99_us"], False)
        lh = streaming["lakehouse"]
        add("stream events received / sent", lh["events_received"] / lh["chunks_sent"], 1.0, True)
    retrieval = report.get("retrieval")
    if retrieval:
        p99_us = retrieval["prehook"].get("prehook_p99_us")
        add("pre-hook p99 (ms)", None if p99_us is None else p99_us / 1000, TARGETS["prehook_p99_ms"], False)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--venv", help="venv holding litellm and matplotlib")
    ap.add_argument("--sections", default="proxy,streaming,retrieval")
    ap.add_argument("--targets", default="direct,nginx,lakehouse,litellm,floor,floor_json,floor_typed")
    ap.add_argument("--levels", default=os.environ.get("LEVELS", "1,16,64"))
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "5")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")))
    ap.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", "100000")))
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    sections = set(args.sections.split(","))
    wanted = args.targets.split(",")
    venv = pathlib.Path(args.venv) if args.venv else None
    # HALT_POLL_NS=200000 runs with the guest polling 200 us before it halts an
    # idle vCPU (the kernel's default where this VM has 0), to show the hop's
    # cost without the VM's wakeup cost; the setting is put back afterwards.
    halt_poll_was = set_halt_poll(int(os.environ["HALT_POLL_NS"])) if "HALT_POLL_NS" in os.environ else None
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    procs = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = {"stamp": stamp, "cores": os.cpu_count(), "workers": WORKERS, "idle": idle_policy(), "pgo": pgo_profile()}
    try:
        fake, fake_url = start_printing([str(bins / "fake-upstream"), "--listen", "127.0.0.1:0"])
        procs.append(fake)
        lakehouse, lakehouse_url = start_lakehouse(bins, tmp, fake_url)
        procs.append(lakehouse)
        report["rss_mb"] = {"lakehouse_idle": rss_mb(lakehouse.pid)}
        targets = {"direct": (f"{fake_url}/openai/v1/chat/completions", "gpt-4o", KEY)}
        # Whose CPU time a target's runs count; `direct` has no proxy, so it counts the upstream's.
        pids = {"direct": fake.pid, "lakehouse": lakehouse.pid}
        if "nginx" in wanted:
            nginx, nginx_url = start_nginx(tmp, int(fake_url.rsplit(":", 1)[1]))
            procs.append(nginx)
            targets["nginx"] = (f"{nginx_url}/openai/v1/chat/completions", "gpt-4o", KEY)
            pids["nginx"] = nginx.pid
        targets["lakehouse"] = (f"{lakehouse_url}/v1/chat/completions", "bench/gpt-4o", KEY)
        for floor, mode in FLOORS.items():
            if floor in wanted:
                proc, url = start_printing(
                    [str(bins / "proxy-floor"), "--listen", "127.0.0.1:0", "--upstream", f"{fake_url}/openai/v1", "--mode", mode]
                )
                procs.append(proc)
                targets[floor] = (f"{url}/v1/chat/completions", "gpt-4o", KEY)
                pids[floor] = proc.pid
        if "litellm" in wanted and venv and (venv / "bin" / "litellm").exists():
            litellm, litellm_url = start_litellm(tmp, venv, fake_url)
            procs.append(litellm)
            targets["litellm"] = (f"{litellm_url}/v1/chat/completions", "gpt-4o", LITELLM_KEY)
            pids["litellm"] = litellm.pid
        if "proxy" in sections:
            print("== proxy overhead", flush=True)
            levels = [int(x) for x in args.levels.split(",")]
            results, summary = proxy_section(targets, pids, fake.pid, levels, args.duration, args.rounds, tmp)
            report["proxy"] = {"duration_s": args.duration, "rounds": args.rounds, "levels": levels, "results": results, "summary": summary}
            report["rss_mb"]["lakehouse_after_load"] = rss_mb(lakehouse.pid)
        if "streaming" in sections:
            print("== streaming", flush=True)
            report["streaming"] = streaming_section({k: v for k, v in targets.items() if k != "litellm" and k not in FLOORS}, 300, 20, 50)
        # The retrieval figures need the machine to themselves.
        stop_all(procs)
        if "retrieval" in sections:
            print(f"== retrieval (3 corpora x {args.rows} x 384)", flush=True)
            report["retrieval"] = retrieval_section(bins, args.rows, 2000)
        report["targets"] = targets_table(report)
        out_dir = pathlib.Path("bench/results")
        out_dir.mkdir(parents=True, exist_ok=True)
        base = out_dir / stamp
        if "proxy" in report:
            report["plots"] = plots(report["proxy"]["results"], str(base))
        (out_dir / f"{stamp}.json").write_text(json.dumps(report, indent=2))
        (out_dir / f"{stamp}.md").write_text(markdown(report))
        print(markdown(report))
        print(f"wrote {base}.json and {base}.md")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
        if halt_poll_was is not None:
            set_halt_poll(halt_poll_was)


if __name__ == "__main__":
    main()
