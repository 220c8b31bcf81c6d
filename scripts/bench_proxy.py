#!/usr/bin/env python3
"""Runs the proxy benchmark; see bench_proxy.sh. Loopback only, bounded in time."""

import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

KEY = "sk-bench"
# nginx worker_processes and Lakehouse tokio worker threads, the same for both. On the
# 2-core bench machine the load generator and the fake upstream need the other core.
WORKERS = int(os.environ.get("WORKERS", "1"))


def start(args):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start: {line!r}")
    return proc, line.strip().split("listening on ", 1)[1]


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp, upstream_port):
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {WORKERS};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream fake {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
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
    return proc, f"http://127.0.0.1:{port}"


def wrk(url, body, connections, duration, tmp):
    script = tmp / "post.lua"
    script.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {KEY}'\n"
        "done = function(summary, latency, requests)\n"
        "  io.write(string.format('JSON {\"p50\":%d,\"p99\":%d,\"requests\":%d,\"errors\":%d,\"non2xx\":%d,\"duration_us\":%d}\\n',\n"
        "    latency:percentile(50), latency:percentile(99), summary.requests,\n"
        "    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,\n"
        "    summary.errors.status, summary.duration))\n"
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^JSON (.*)$", out, re.M)
    if not match:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    r = json.loads(match.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "8")))
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    procs = []
    try:
        fake, fake_url = start([str(bins / "fake-upstream"), "--listen", "127.0.0.1:0"])
        procs.append(fake)
        upstream_port = int(fake_url.rsplit(":", 1)[1])
        nginx, nginx_url = start_nginx(tmp, upstream_port)
        procs.append(nginx)
        secrets = tmp / "secrets"
        secrets.mkdir()
        (secrets / "bench.env").write_text(f"BENCH_API_KEY={KEY}\n")
        (secrets / "bench.env").chmod(0o600)
        (tmp / "lakehouse.toml").write_text(
            f"""
secrets_dir = "secrets"
[server]
worker_threads = {WORKERS}
[providers.ollama]
enabled = false
[[providers.custom]]
name = "bench"
base_url = "{fake_url}/openai/v1"
key_file = "secrets/bench.env"
"""
        )
        env = dict(os.environ, RUST_LOG="warn")
        lakehouse = subprocess.Popen(
            [str(bins / "lakehouse"), "serve", "--config", str(tmp / "lakehouse.toml"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        procs.append(lakehouse)
        lakehouse_url = lakehouse.stdout.readline().strip().split("listening on ", 1)[1]

        targets = {
            "direct": (f"{fake_url}/openai/v1/chat/completions", "gpt-4o"),
            "nginx": (f"{nginx_url}/openai/v1/chat/completions", "gpt-4o"),
            "lakehouse": (f"{lakehouse_url}/v1/chat/completions", "bench/gpt-4o"),
        }
        results = {}
        for mode in ["non_stream", "stream"]:
            for conns in [1, 16]:
                row = {}
                for name, (url, model) in targets.items():
                    body = {
                        "model": model,
                        "messages": [{"role": "user", "content": "bench"}],
                        "stream": mode == "stream",
                    }
                    wrk(url, body, conns, 1, tmp)  # warm-up: connections, pools, caches
                    row[name] = wrk(url, body, conns, args.duration, tmp)
                results[f"{mode}/c{conns}"] = row

        summary = {}
        print(f"{'case':<16}{'target':<11}{'p50 us':>9}{'p99 us':>9}{'req/s':>10}{'errors':>8}")
        for case, row in results.items():
            for name, r in row.items():
                print(f"{case:<16}{name:<11}{r['p50']:>9}{r['p99']:>9}{r['rps']:>10.0f}{r['errors'] + r['non2xx']:>8}")
            d, n, l = row["direct"], row["nginx"], row["lakehouse"]
            summary[case] = {
                "lakehouse_added_p50_us": l["p50"] - d["p50"],
                "lakehouse_added_p99_us": l["p99"] - d["p99"],
                "nginx_added_p50_us": n["p50"] - d["p50"],
                "nginx_added_p99_us": n["p99"] - d["p99"],
                "lakehouse_rps_over_nginx": l["rps"] / n["rps"],
                "lakehouse_rps_over_direct": l["rps"] / d["rps"],
            }
        print()
        print(f"{'case':<16}{'LH +p50':>9}{'LH +p99':>9}{'nginx +p50':>12}{'nginx +p99':>12}{'LH/nginx rps':>14}")
        for case, s in summary.items():
            print(
                f"{case:<16}{s['lakehouse_added_p50_us']:>9}{s['lakehouse_added_p99_us']:>9}"
                f"{s['nginx_added_p50_us']:>12}{s['nginx_added_p99_us']:>12}{s['lakehouse_rps_over_nginx']:>14.2f}"
            )
        out_dir = pathlib.Path("bench/results")
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = out_dir / f"proxy-{stamp}.json"
        out.write_text(
            json.dumps(
                {"duration_s": args.duration, "workers": WORKERS, "cores": os.cpu_count(), "results": results, "summary": summary},
                indent=2,
            )
        )
        print(f"\nwrote {out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=35)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
