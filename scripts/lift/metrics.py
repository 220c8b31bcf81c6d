"""Ranking metrics for the playbook-lift test: nDCG@k, Recall@k, MRR, and a
paired bootstrap confidence interval for the difference of two runs."""

import math
import random


def ndcg(ranked, relevant, k=10):
    """Binary-gain nDCG@k of `ranked` ids against the set `relevant`."""
    dcg = sum(1 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def recall(ranked, relevant, k=10):
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked, relevant):
    return next((1 / (i + 1) for i, doc in enumerate(ranked) if doc in relevant), 0.0)


METRICS = {"ndcg@10": ndcg, "recall@10": recall, "mrr": reciprocal_rank}


def per_query(rankings, judgments):
    """{metric: [score per query]} for `rankings` {qid: [ids]}, in sorted qid order."""
    qids = sorted(judgments)
    return {name: [f(rankings.get(q, []), set(judgments[q])) for q in qids] for name, f in METRICS.items()}


def mean(values):
    return sum(values) / len(values) if values else 0.0


def bootstrap_ci(base, other, rounds=2000, seed=7, level=0.95):
    """Mean of `other - base` (paired by query) and its percentile bootstrap interval."""
    diffs = [o - b for b, o in zip(base, other)]
    if not diffs:
        return 0.0, (0.0, 0.0)
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(mean([diffs[rng.randrange(n)] for _ in range(n)]) for _ in range(rounds))
    low = means[int((1 - level) / 2 * rounds)]
    high = means[min(rounds - 1, int((1 + level) / 2 * rounds))]
    return mean(diffs), (low, high)


def compare(runs, judgments, base="plain"):
    """Per run: each metric's mean; for runs other than `base`, the lift over it
    in points (×100) with its 95% bootstrap interval."""
    scores = {name: per_query(r, judgments) for name, r in runs.items()}
    report = {}
    for name, by_metric in scores.items():
        entry = {"queries": len(judgments)}
        for metric, values in by_metric.items():
            entry[metric] = round(mean(values), 4)
            if name != base:
                lift, (low, high) = bootstrap_ci(scores[base][metric], values)
                entry[f"{metric}_lift_points"] = round(100 * lift, 2)
                entry[f"{metric}_lift_ci95"] = [round(100 * low, 2), round(100 * high, 2)]
        report[name] = entry
    return report
