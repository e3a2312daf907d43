"""``journeygate score-sentiment`` and ``train-sentiment`` as a user runs them (training itself
is covered by the model tests: a real run takes minutes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from journeygate.config import PROJECT_ROOT

JOURNEYGATE = [sys.executable, "-m", "journeygate.cli"]


def run(*args: str, artifacts: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOURNEYGATE_PLUGIN__SENTIMENT__ARTIFACTS": artifacts}
    return subprocess.run(
        [*JOURNEYGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env=env,
    )


def figure(output: str, name: str) -> float:
    match = re.search(rf"^{name}\s+([0-9.]+)$", output, re.MULTILINE)
    assert match, output
    return float(match.group(1))


def test_score_sentiment_prints_accuracy_of_a_labelled_file(artifact_root, held_out, tmp_path):
    path = tmp_path / "held_out.tsv"
    lines = [
        f"{text}\t{1 if label == 'positive' else 0}"
        for text, label in zip(held_out.texts[::4], held_out.labels[::4], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("score-sentiment", str(path), "--show", "3", artifacts=str(artifact_root))
    assert result.returncode == 0, result.stderr
    assert figure(result.stdout, "texts") == len(lines)
    # single sentences: a lukewarm one is called mixed, which counts as wrong here
    assert figure(result.stdout, "accuracy") >= 0.8
    assert figure(result.stdout, "balanced accuracy") >= 0.8
    assert result.stdout.count(" -> ") == 3


def test_score_sentiment_errors_are_one_clean_line(artifact_root, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab on this line\n", encoding="utf-8")
    result = run("score-sentiment", str(bad), artifacts=str(artifact_root))
    assert result.returncode == 2
    assert result.stderr.startswith("journeygate: ") and "bad.tsv:1" in result.stderr
    assert "Traceback" not in result.stderr
    good = tmp_path / "good.tsv"
    good.write_text("Great!\t1\n", encoding="utf-8")
    missing = run("score-sentiment", str(good), artifacts=str(tmp_path / "no-models"))
    assert missing.returncode == 2
    assert "journeygate: " in missing.stderr and "train-sentiment" in missing.stderr


def test_an_old_model_is_refused_with_a_retrain_hint_and_if_stale_keeps_a_current_one(
    artifact_root, stale_root, tmp_path
):
    good = tmp_path / "good.tsv"
    good.write_text("Great!\t1\n", encoding="utf-8")
    stale = run("score-sentiment", str(good), artifacts=str(stale_root))
    assert stale.returncode == 2 and "Traceback" not in stale.stderr
    assert (
        "format 1" in stale.stderr and "retrain with `journeygate train-sentiment`" in stale.stderr
    )
    current = run("train-sentiment", "--if-stale", artifacts=str(artifact_root))
    assert current.returncode == 0, current.stderr
    assert "is current; not retrained" in current.stdout
