#!/usr/bin/env python3
"""The playbook-lift reality test, driven over HTTP through the real server.

1. Starts the fake upstream and `lakehouse serve` (port 0, a scratch store),
   creates the `debian` corpus and ingests the evaluation set's documents.
2. Copies the store: one copy learns from real feedback, the other (control)
   from shuffled feedback.
3. Train: each train query goes to `rag/lift-boost` (matrix + playbook); the
   shown sources are rated through `POST /v1/feedback` as a user would: +1 for
   a relevant source, -1 for the irrelevant ones shown above it (or for the
   top 3 when nothing relevant was shown). The control rates the same way
   against the judgments of another, randomly paired train query.
4. Frozen (no more feedback), test queries run three ways: `rag/lift-plain`
   (matrix only), `rag/lift-boost` on the trained store, `rag/lift-boost` on
   the control store. Reports nDCG@10, Recall@10 and MRR with the lift over
   plain retrieval and a paired bootstrap 95% interval, overall and per slice
   (paired: a related train query exists; unpaired: none does).
5. End to end (only with --models-config, a TOML file holding `[providers.*]`
   and `[models]` for real models): test questions are answered by
   `[models].local_fast` through rag models without and with the boost, and
   `[models].local_judge` scores each answer 1-5 against the package's
   description. Without a real model this step is skipped and says so.

Usage: harness.py SET_DIR --bin-dir DIR [--out reports/lift] [--boost strength=0.3,...]
                  [--models-config FILE --e2e-questions N]
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import metrics  # noqa: E402

CORPUS = "debian"
NEGATIVE_TOP = 3


def http(method, url, body=None, content_type="application/json", timeout=600):
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def start(args):
    """Starts a binary that prints `... listening on http://ADDR`; returns (process, URL)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc, line.strip().split("listening on ", 1)[1]


def stop(proc):
    proc.terminate()
    proc.wait(timeout=60)


def rag_model(name, model, plugins, k=10):
    return f"""
[[rag_models]]
name = "{name}"
model = "{model}"
corpora = ["{CORPUS}"]
k = {k}
plugins = {json.dumps(plugins)}
"""


def config_text(store_root, upstream, boost, models_config=None):
    """The retrieval runs answer with the fake upstream; with `models_config`
    (real providers and tiers) the end-to-end rag models are added."""
    boost_lines = "\n".join(f"{k} = {v}" for k, v in boost.items())
    if models_config:
        providers = models_config.read_text()
        e2e = rag_model("rag/lift-e2e-plain", "tier/local_fast", ["matrix"], 4) + rag_model(
            "rag/lift-e2e-boost", "tier/local_fast", ["matrix", "playbook"], 4
        )
    else:
        providers = f"[providers.ollama]\nbase_url = \"{upstream}/ollama\"\n"
        e2e = ""
    return f"""
{providers}
[store]
backend = "local"
root = "{store_root}"
[plugins.matrix]
k = 10
candidates = 40
min_similarity = -1.0
token_budget = 100000
[plugins.playbook.boost]
{boost_lines}
""" + rag_model("rag/lift-plain", "ollama/qwen3:8b", ["matrix"]) + rag_model(
        "rag/lift-boost", "ollama/qwen3:8b", ["matrix", "playbook"]
    ) + e2e


class Server:
    """`lakehouse serve` over one store directory."""

    def __init__(self, bin_dir, work, store, upstream, boost, models_config=None):
        self.config = work / f"{store.name}{'-e2e' if models_config else ''}.toml"
        self.config.write_text(config_text(store, upstream, boost, models_config))
        self.bin = str(bin_dir / "lakehouse")

    def __enter__(self):
        self.proc, self.url = start([self.bin, "serve", "--config", str(self.config), "--listen", "127.0.0.1:0"])
        return self

    def __exit__(self, *exc):
        stop(self.proc)

    def ask(self, model, text):
        """Chat completion id and the ranked source ids."""
        status, body = http(
            "POST", f"{self.url}/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": text}]}
        )
        if status != 200:
            raise RuntimeError(f"chat failed ({status}): {body}")
        return body["id"], [s["id"] for s in body.get("lakehouse", {}).get("sources", [])]

    def rate(self, completion_id, shown, relevant):
        ratings = user_ratings(shown, relevant)
        if not ratings:
            return
        sources = [{"corpus": CORPUS, "id": doc, "rating": r} for doc, r in ratings.items()]
        status, body = http("POST", f"{self.url}/v1/feedback", {"id": completion_id, "rating": 0, "sources": sources})
        if status != 200:
            raise RuntimeError(f"feedback failed ({status}): {body}")


JUDGE_PROMPT = """You grade answers about Debian packages.
Question: {question}
Reference (the package's own description): {reference}
Answer to grade: {answer}
How correct and useful is the answer, from 1 (wrong or useless) to 5 (correct and complete)?
Reply with the number only."""


def answer_and_judge(server, model, question, reference):
    """(answer, score 1-5 or None when the judge's reply holds no score)."""
    # `/v1/chat`: the completion plus a top-level `content`, as curl users read it.
    status, body = http("POST", f"{server.url}/v1/chat", {"model": model, "messages": [{"role": "user", "content": question}]})
    if status != 200:
        raise RuntimeError(f"{model} failed ({status}): {body}")
    answer = body.get("content") or ""
    prompt = JUDGE_PROMPT.format(question=question, reference=reference, answer=answer)
    status, body = http(
        "POST",
        f"{server.url}/v1/chat/completions",
        {"model": "tier/local_judge", "messages": [{"role": "user", "content": prompt}], "temperature": 0},
    )
    if status != 200:
        raise RuntimeError(f"judge failed ({status}): {body}")
    reply = body["choices"][0]["message"].get("content") or ""
    score = next((int(c) for c in reply if c in "12345"), None)
    return answer, score


def end_to_end(server, questions, references):
    """Mean judge score of answers without and with the boost."""
    report = {}
    for variant in ("plain", "boost"):
        scores = [
            answer_and_judge(server, f"rag/lift-e2e-{variant}", q["text"], references[q["relevant"][0]])[1]
            for q in questions
        ]
        scored = [s for s in scores if s is not None]
        report[variant] = {"questions": len(questions), "scored": len(scored), "mean_score": metrics.mean(scored)}
    return report


def user_ratings(shown, relevant):
    """What a user scanning the shown sources would say: +1 for relevant ones,
    -1 for irrelevant ones above the first relevant (the top few if none)."""
    first = next((i for i, doc in enumerate(shown) if doc in relevant), None)
    if first is None:
        return {doc: -1.0 for doc in shown[:NEGATIVE_TOP]}
    ratings = {doc: -1.0 for doc in shown[:first]}
    ratings.update({doc: 1.0 for doc in shown if doc in relevant})
    return ratings


def parallel(fn, items, workers=4):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def train(server, queries, judgments):
    def one(q):
        cid, shown = server.ask("rag/lift-boost", q["text"])
        server.rate(cid, shown, set(judgments[q["qid"]]))

    # In order, one at a time: later queries see earlier feedback, as in use.
    for q in queries:
        one(q)


def rankings(server, model, queries):
    ranked = parallel(lambda q: server.ask(model, q["text"])[1], queries)
    return {q["qid"]: r for q, r in zip(queries, ranked)}


def shuffled(judgments, seed):
    """Each query gets another query's judgments (a random derangement)."""
    qids = sorted(judgments)
    rng = random.Random(seed)
    while True:
        order = qids[:]
        rng.shuffle(order)
        if all(a != b for a, b in zip(qids, order)) or len(qids) < 2:
            return {a: judgments[b] for a, b in zip(qids, order)}


def ingest(args, work, store, upstream, boost):
    """Creates the corpus and ingests the set's documents into `store`."""
    with Server(args.bin_dir, work, store, upstream, boost) as server:
        status, body = http(
            "POST", f"{server.url}/admin/corpora", {"name": CORPUS, "text_columns": ["text"], "id_column": "id"}
        )
        if status not in (200, 201):
            raise RuntimeError(f"cannot create the corpus ({status}): {body}")
        docs = (args.set_dir / "docs.jsonl").read_bytes()
        status, body = http(
            "POST", f"{server.url}/admin/corpora/{CORPUS}/ingest?format=jsonl", docs, "application/x-ndjson", 7200
        )
        if status != 200:
            raise RuntimeError(f"ingest failed ({status}): {body}")


def parse_boost(text):
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {k.strip(): float(v) for k, v in pairs}


def table(report):
    lines = ["| slice | run | nDCG@10 | Recall@10 | MRR | nDCG lift (95% CI) |", "|---|---|---|---|---|---|"]
    for slice_name, runs in report["slices"].items():
        for run, m in runs.items():
            lift = ""
            if "ndcg@10_lift_points" in m:
                low, high = m["ndcg@10_lift_ci95"]
                lift = f"{m['ndcg@10_lift_points']:+.1f} ({low:+.1f}, {high:+.1f})"
            lines.append(
                f"| {slice_name} ({m['queries']}) | {run} | {m['ndcg@10']:.3f} | {m['recall@10']:.3f} | {m['mrr']:.3f} | {lift} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set_dir", type=pathlib.Path)
    parser.add_argument("--bin-dir", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("reports/lift"))
    parser.add_argument("--boost", default="", help="playbook boost settings, e.g. strength=0.3,min_similarity=0.5")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models-config", type=pathlib.Path, help="real providers and [models] for the end-to-end run")
    parser.add_argument("--e2e-questions", type=int, default=50)
    parser.add_argument("--store-cache", type=pathlib.Path, help="keep the ingested store here and reuse it (tuning runs)")
    args = parser.parse_args()
    boost = parse_boost(args.boost)

    queries = [json.loads(line) for line in open(args.set_dir / "queries.jsonl")]
    judgments = {q["qid"]: q["relevant"] for q in queries}
    train_queries = [q for q in queries if q["split"] == "train"]
    test_queries = [q for q in queries if q["split"] == "test"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="lakehouse-lift-"))
    started = time.monotonic()
    upstream_proc, upstream = start([str(args.bin_dir / "fake-upstream"), "--listen", "127.0.0.1:0"])
    try:
        learned, control = work / "learned", work / "control"
        cached = args.store_cache and (args.store_cache / "complete").exists()
        if cached:
            shutil.copytree(args.store_cache / "store", learned)
        else:
            ingest(args, work, learned, upstream, boost)
            if args.store_cache:
                shutil.rmtree(args.store_cache, ignore_errors=True)
                shutil.copytree(learned, args.store_cache / "store")
                (args.store_cache / "complete").touch()
        ingest_s = time.monotonic() - started
        shutil.copytree(learned, control)

        runs = {}
        with Server(args.bin_dir, work, learned, upstream, boost) as server:
            runs["plain"] = rankings(server, "rag/lift-plain", test_queries)
            train(server, train_queries, judgments)
            runs["boost"] = rankings(server, "rag/lift-boost", test_queries)
        e2e = {"skipped": "no real model: pass --models-config with [providers.*] and [models] local_fast, local_judge"}
        if args.models_config:
            references = {}
            for line in open(args.set_dir / "docs.jsonl"):
                doc = json.loads(line)
                references[doc["id"]] = doc["text"]
            paired = [q for q in test_queries if q["group"] == "paired"][: args.e2e_questions]
            with Server(args.bin_dir, work, learned, upstream, boost, args.models_config) as server:
                e2e = end_to_end(server, paired, references)
        print(f"end to end: {json.dumps(e2e)}")
        with Server(args.bin_dir, work, control, upstream, boost) as server:
            train_judgments = shuffled({q["qid"]: judgments[q["qid"]] for q in train_queries}, args.seed)
            train(server, train_queries, train_judgments)
            runs["shuffled_control"] = rankings(server, "rag/lift-boost", test_queries)
    finally:
        stop(upstream_proc)
        shutil.rmtree(work, ignore_errors=True)

    slices = {"all": test_queries}
    for group in ("paired", "unpaired"):
        slices[group] = [q for q in test_queries if q["group"] == group]
    report = {
        "set": str(args.set_dir),
        "docs": sum(1 for _ in open(args.set_dir / "docs.jsonl")),
        "train_queries": len(train_queries),
        "test_queries": len(test_queries),
        "boost": boost,
        "ingest_s": round(ingest_s, 1),
        "total_s": round(time.monotonic() - started, 1),
        "end_to_end": e2e,
        "slices": {
            name: metrics.compare(
                {run: {q["qid"]: r[q["qid"]] for q in qs} for run, r in runs.items()},
                {q["qid"]: judgments[q["qid"]] for q in qs},
            )
            for name, qs in slices.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stamp}.md").write_text(table(report) + "\n")
    print(table(report))
    print(f"wrote {args.out / stamp}.json")


if __name__ == "__main__":
    main()
