#!/usr/bin/env python3
"""Builds the playbook-lift evaluation set from Debian's package descriptions.

Real text this project did not write, available offline once apt has fetched
the English descriptions (`apt-get update -o Acquire::Languages=en`): each
package's synopsis and long description from the Translation-en lists, its
section from `apt-cache dumpavail`.

What it writes (deterministic for a given apt snapshot and --seed):
  docs.jsonl     {"id": package, "section", "text"}: the package name and long
                 description. The synopsis is never in a document, nor is the
                 sentence chosen as a test query.
  queries.jsonl  {"qid", "split": "train"|"test", "group", "text", "relevant": [package]}
    train queries are synopses; test queries are another sentence about the
    same package (removed from its document). Groups:
      paired     a train query and a test query express the same need;
      unpaired   a test query with no related train query (the "no harm" slice);
      train_only a train query with no test query (feedback noise for the rest).

Usage: build_set.py OUT_DIR [--docs N] [--paired N] [--unpaired N] [--train-only N] [--seed S]
"""

import argparse
import glob
import json
import pathlib
import random
import re
import subprocess
import sys

LISTS = "/var/lib/apt/lists"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def read_list(path):
    """Decompresses an apt list file with apt's own helper (handles lz4, xz, gz)."""
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, check=True)
    return out.stdout.decode("utf-8", "replace")


def stanzas(text):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def descriptions():
    """{package: (synopsis, [paragraph, ...])} from every Translation-en list."""
    files = sorted(glob.glob(f"{LISTS}/*_i18n_Translation-en*"))
    if not files:
        sys.exit("no English descriptions: run `apt-get update -o Acquire::Languages=en` first")
    found, seen_md5 = {}, set()
    for path in files:
        for s in stanzas(read_list(path)):
            package, body, md5 = s.get("Package"), s.get("Description-en"), s.get("Description-md5")
            if not package or not body or package in found or md5 in seen_md5:
                continue
            seen_md5.add(md5)
            synopsis, _, long_text = body.partition("\n")
            paragraphs, current = [], []
            for line in long_text.splitlines():
                line = line[1:] if line.startswith(" ") else line
                if line.strip() == ".":
                    paragraphs.append(" ".join(current))
                    current = []
                else:
                    current.append(line.strip())
            paragraphs.append(" ".join(current))
            found[package] = (synopsis.strip(), [p for p in paragraphs if p.strip()])
    return found


def sections():
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, check=True)
    return {s["Package"]: s.get("Section", "") for s in stanzas(out.stdout.decode("utf-8", "replace")) if "Package" in s}


def sentences(paragraphs):
    return [s.strip() for p in paragraphs for s in SENTENCE_END.split(p) if s.strip()]


def occurrences(haystack, needle, limit=2):
    """How often `needle` occurs in `haystack`, counting up to `limit`."""
    found, start = 0, 0
    while found < limit:
        at = haystack.find(needle, start)
        if at < 0:
            break
        found, start = found + 1, at + 1
    return found


def query_sentence(synopsis, paragraphs, haystack, rng):
    """A sentence of 8-30 words found in this package's description only
    (so no boilerplate shared with other packages), other than the synopsis."""
    candidates = [
        s
        for s in sentences(paragraphs)
        if 8 <= len(s.split()) <= 30 and s.lower() != synopsis.lower() and s.endswith((".", "!", "?"))
    ]
    rng.shuffle(candidates)
    return next((s for s in candidates if occurrences(haystack, s.lower()) == 1), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--docs", type=int, default=0, help="corpus size (0: every package)")
    parser.add_argument("--paired", type=int, default=400)
    parser.add_argument("--unpaired", type=int, default=150)
    parser.add_argument("--train-only", type=int, default=150)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    described = descriptions()
    section_of = sections()
    # Long enough to say something, short synopsis that is a real phrase.
    usable = sorted(
        p
        for p, (synopsis, paragraphs) in described.items()
        if len(" ".join(paragraphs).split()) >= 25 and len(synopsis.split()) >= 3
    )
    # Every usable document's text, to keep queries out of all of them.
    haystack = "\x00".join(f"{p}\n" + "\n".join(described[p][1]).lower() for p in usable)
    judged_count = args.paired + args.unpaired + args.train_only
    judged = []
    for package in rng.sample(usable, len(usable)):
        if len(judged) == judged_count:
            break
        synopsis, paragraphs = described[package]
        if occurrences(haystack, synopsis.lower(), 1):
            continue
        sentence = query_sentence(synopsis, paragraphs, haystack, rng)
        if sentence:
            judged.append((package, sentence))
    if len(judged) < judged_count:
        sys.exit(f"only {len(judged)} usable packages for {judged_count} judged ones")

    corpus = set(usable)
    if args.docs:
        judged_names = {p for p, _ in judged}
        rest = [p for p in usable if p not in judged_names]
        corpus = judged_names | set(rng.sample(rest, max(0, args.docs - len(judged_names))))

    held_out = {}
    queries = []
    groups = ["paired"] * args.paired + ["unpaired"] * args.unpaired + ["train_only"] * args.train_only
    for n, ((package, sentence), group) in enumerate(zip(judged, groups)):
        synopsis, _ = described[package]
        if group in ("paired", "train_only"):
            queries.append({"qid": f"q{n}-train", "split": "train", "group": group, "text": synopsis, "relevant": [package]})
        if group in ("paired", "unpaired"):
            held_out[package] = sentence
            queries.append({"qid": f"q{n}-test", "split": "test", "group": group, "text": sentence, "relevant": [package]})

    docs = []
    for package in sorted(corpus):
        _, paragraphs = described[package]
        text = "\n".join(paragraphs)
        if package in held_out:
            text = text.replace(held_out[package], "").replace("  ", " ")
        docs.append({"id": package, "section": section_of.get(package, ""), "text": f"{package}\n{text.strip()}"})

    # The documents never contain a query verbatim (checked again on the result).
    corpus_text = "\x00".join(d["text"].lower() for d in docs)
    leaking = [q["qid"] for q in queries if q["text"].lower() in corpus_text]
    if leaking:
        sys.exit(f"queries found verbatim in documents: {leaking[:5]}")

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "docs.jsonl", "w") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    with open(args.out / "queries.jsonl", "w") as f:
        f.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    print(json.dumps({"docs": len(docs), "queries": len(queries), "out": str(args.out)}))


if __name__ == "__main__":
    main()
