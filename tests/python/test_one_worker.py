"""The one-worker runtime (`worker_threads = 1`) and its busy polling, through
the official client against the real binary: concurrent chats and streams come
back whole, a server left idle stops polling (its CPU time stays flat), and
SIGTERM still ends it cleanly."""

import concurrent.futures
import os
import time

import openai

from conftest import start_lakehouse

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def test_one_worker_serves_concurrent_chats_then_stops_polling_when_idle(fake_upstream):
    proc, url = start_lakehouse(fake_upstream, "[server]\nworker_threads = 1\nbusy_poll_us = 1000\n")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)

        def chat(i):
            reply = client.chat.completions.create(
                model="ollama/qwen3:8b", messages=[{"role": "user", "content": f"hi {i}"}]
            )
            return reply.choices[0].message.content

        def stream(i):
            chunks = client.chat.completions.create(
                model="kimi/kimi-k2.6",
                messages=[{"role": "user", "content": f"hi {i}"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(chunks)
            assert chunks[-1].usage.total_tokens > 0
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            chats = list(pool.map(chat, range(200)))
            streams = list(pool.map(stream, range(100)))
        assert chats == [f"Hello from ollama! You said: hi {i}" for i in range(200)]
        assert streams == [f"Hello from kimi! You said: hi {i}" for i in range(100)]

        # Idle, the poller sleeps: a second costs the server a few
        # milliseconds (the observer's log segment), where polling on
        # would cost most of it.
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        spent = cpu_seconds(proc.pid) - before
        assert spent < 0.2, f"an idle server used {spent:.2f} s of CPU in 1 s"
    finally:
        proc.terminate()
        assert proc.wait(timeout=40) == 0
