"""The playbook-lift harness: its metrics on hand-checked cases, and one run
over the shipped Debian sample through the real binaries."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/lift"))
import harness  # noqa: E402
import metrics  # noqa: E402

from conftest import BIN_DIR  # noqa: E402


def test_ndcg_recall_and_mrr_on_hand_checked_rankings():
    relevant = {"a"}
    assert metrics.ndcg(["a", "b", "c"], relevant) == 1.0
    assert metrics.ndcg(["b", "c", "a"], relevant) == pytest.approx(0.5)  # 1/log2(4)
    assert metrics.ndcg(["b", "c", "d"], relevant) == 0.0
    # Two relevant, found at ranks 2 and 3 of a reversed list.
    two = {"a", "b"}
    ideal = 1 + 1 / math.log2(3)
    assert metrics.ndcg(["c", "b", "a"], two) == pytest.approx((1 / math.log2(3) + 0.5) / ideal)
    assert metrics.recall(["c", "b", "x"], two) == 0.5
    assert metrics.recall(["x"] * 10 + ["a"], relevant) == 0.0  # past the cut-off
    assert metrics.reciprocal_rank(["x", "y", "a"], relevant) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank([], relevant) == 0.0


def test_lift_and_interval_of_identical_and_improved_runs():
    judgments = {f"q{i}": ["a"] for i in range(40)}
    worse = {q: ["b", "a"] for q in judgments}
    best = {q: ["a", "b"] for q in judgments}
    report = metrics.compare({"plain": worse, "same": dict(worse), "better": best}, judgments)
    assert report["same"]["ndcg@10_lift_points"] == 0.0
    assert report["same"]["ndcg@10_lift_ci95"] == [0.0, 0.0]
    expected = 100 * (1 - 1 / math.log2(3))
    assert report["better"]["ndcg@10_lift_points"] == pytest.approx(expected, abs=0.01)
    assert report["better"]["mrr_lift_points"] == 50.0
    # Half the queries improved: the interval brackets the mean and excludes 0.
    mixed = {q: (best if i % 2 else worse)[q] for i, q in enumerate(sorted(judgments))}
    low, high = metrics.compare({"plain": worse, "mixed": mixed}, judgments)["mixed"]["ndcg@10_lift_ci95"]
    assert 0 < low < expected / 2 < high < expected


def test_shuffled_judgments_never_keep_a_query_own():
    judgments = {f"q{i}": [f"d{i}"] for i in range(25)}
    shuffled = harness.shuffled(judgments, seed=3)
    assert sorted(map(tuple, shuffled.values())) == sorted(map(tuple, judgments.values()))
    assert all(shuffled[q] != judgments[q] for q in judgments)


def test_user_ratings_reward_the_relevant_and_blame_what_was_above_it():
    assert harness.user_ratings(["x", "a", "y"], {"a"}) == {"x": -1.0, "a": 1.0}
    assert harness.user_ratings(["a", "x"], {"a"}) == {"a": 1.0}
    assert harness.user_ratings(["x", "y", "z", "w"], {"a"}) == {"x": -1.0, "y": -1.0, "z": -1.0}


def test_harness_runs_on_the_sample_and_reports_every_run(tmp_path):
    sample = pathlib.Path(__file__).parent / "data/lift_sample"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lift/harness.py"), str(sample), "--bin-dir", str(BIN_DIR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    [report_file] = tmp_path.glob("*.json")
    report = json.loads(report_file.read_text())
    assert set(report["slices"]) == {"all", "paired", "unpaired"}
    runs = report["slices"]["all"]
    assert set(runs) == {"plain", "boost", "shuffled_control"}
    assert runs["plain"]["queries"] == report["test_queries"] == 40
    for run in runs.values():
        assert 0 < run["ndcg@10"] <= 1
    # Feedback on related train queries lifts the paired slice.
    assert report["slices"]["paired"]["boost"]["ndcg@10_lift_points"] > 0
    assert (tmp_path / report_file.name.replace(".json", ".md")).read_text().startswith("| slice |")
