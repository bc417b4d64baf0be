"""An ablation's config checks (orchestration/config/ablation.py) and its verdict's statistics
(orchestration/ablation/verdict.py), by hand. The runs themselves: tests/integration/test_ablation.py."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from orchestration.ablation.verdict import lower_is_better, markdown, mean_std, pooled_std, verdicts
from orchestration.config.ablation import data_overrides, load_ablation, steps_for
from pipelines.typed_config import ConfigError
from repo_paths import REPO


def test_mean_std_and_pooled_std_by_hand():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    # s_a = 1 (n 3), s_b = 2 (n 3): sqrt((2 * 1 + 2 * 4) / 4)
    assert pooled_std([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]) == pytest.approx(math.sqrt(10 / 4))


def test_direction_of_each_metric():
    assert lower_is_better("eval.mean_bpb") and lower_is_better("eval.wikitext2_test.bpb") and lower_is_better("val_loss")
    assert not lower_is_better("eval.arc_easy.acc") and not lower_is_better("eval.piqa.acc_norm")


def test_a_clear_difference_is_better_or_worse_and_a_small_one_within_noise():
    finals = {"base": [3.00, 3.02, 2.98], "worse": [3.30, 3.31, 3.29], "same": [3.01, 2.99, 3.02],
              "better": [2.80, 2.82, 2.79]}
    tails = {v: [[x, x + 0.001, x - 0.001] for x in vals] for v, vals in finals.items()}
    rows = {r.variant: r for r in verdicts(finals, tails, "base", "eval.mean_bpb")}
    assert rows["base"].verdict == "baseline"
    assert rows["worse"].verdict == "worse" and rows["worse"].snr_seed < -2
    assert rows["worse"].diff == pytest.approx(0.30) and rows["worse"].snr_seed == pytest.approx(
        -0.30 / pooled_std(finals["worse"], finals["base"]))
    assert rows["better"].verdict == "better" and rows["same"].verdict == "within noise"
    # an accuracy: higher is better, the same numbers flip
    acc = {r.variant: r.verdict for r in verdicts(finals, tails, "base", "eval.arc_easy.acc")}
    assert acc["worse"] == "better" and acc["better"] == "worse"


def test_a_difference_inside_one_runs_checkpoint_spread_is_within_noise():
    finals = {"base": [3.00, 3.00, 3.00], "v": [3.05, 3.05, 3.05]}  # no seed spread at all
    tails = {"base": [[2.9, 3.1, 3.0]] * 3, "v": [[2.95, 3.15, 3.05]] * 3}  # checkpoints move by 0.1
    row = verdicts(finals, tails, "base", "eval.mean_bpb")[1]
    assert abs(row.snr_seed) > 2 and abs(row.snr_checkpoint) < 1 and row.verdict == "within noise"


def test_the_table_states_its_rule():
    finals = {"base": [1.0, 1.1], "v": [2.0, 2.1]}
    text = markdown(verdicts(finals, {}, "base", "eval.mean_bpb", threshold=3), threshold=3)
    assert "| eval.mean_bpb | v | 2.0500 |" in text and "worse" in text and "|snr| >= 3" in text
    with pytest.raises(ValueError, match="baseline 'nope'"):
        verdicts(finals, {}, "nope", "eval.mean_bpb")


ABLATION = REPO / "configs" / "ablate" / "quickstart.yaml"


@pytest.mark.parametrize("override, message", [
    ('variants.1.pipeline=["filter.nope=1"]', "variants.1 (no_filters): filter.nope: unknown key"),
    ('variants.2.train=["optim.lrr=1"]', "variants.2 (no_minhash): optim.lrr: unknown key"),
    ("budget_tokens=100", "budget_tokens: 100 is less than one batch of the training job (4,096 tokens"),
    ("suite=/nonexistent.yaml", "suite: no such file /nonexistent.yaml"),
    ("variants.1.name=baseline", "variants.1.name: 'baseline' is used twice"),
    ("baseline=zzz", "baseline: no variant named 'zzz'"),
    ("variants=[]", "variants: an ablation needs at least the baseline variant"),
    ('variants.3.pipeline=["tokenize.enabled=false", "tokenizer.enabled=false"]',
     "variants.3 (strict_quality): its pipeline makes no token shards to train on"),
])
def test_a_bad_ablation_is_one_line_before_any_work(override, message):
    with pytest.raises(ConfigError) as err:
        load_ablation(ABLATION, [override])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_shipped_ablation_builds_every_variant_and_the_cli_refuses_with_exit_2():
    cfg, variants = load_ablation(ABLATION)
    assert [v.name for v in variants] == ["baseline", "no_filters", "no_minhash", "strict_quality", "baseline_again"]
    assert variants[2].pipeline.minhash.enabled is False and variants[3].pipeline.quality.threshold == 0.8
    assert variants[0].pipeline.minhash.enabled and steps_for(cfg, variants[0].train) == 60
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "ablate", str(ABLATION), "--check", "seeds=0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("tokenmill: config error: seeds"), proc.stderr


def test_the_planted_damage_shuffles_a_seeded_half_and_keeps_every_word():
    import pyarrow as pa

    from planted import ShuffleWords, ShuffleWordsConfig
    from pipelines.records import REASON

    texts = [f"document {i} says one two three four five six seven eight nine ten" for i in range(400)]
    batch = pa.table({"id": [f"d{i}" for i in range(400)], "text": texts, REASON: [""] * 400})
    stage = ShuffleWords(ShuffleWordsConfig(fraction=0.5, seed=1))
    out = stage.apply(batch, None).column("text").to_pylist()
    changed = [a != b for a, b in zip(texts, out)]
    assert 160 < sum(changed) < 240  # about half
    assert all(sorted(a.split()) == sorted(b.split()) for a, b in zip(texts, out))
    assert stage.apply(batch, None).column("text").to_pylist() == out  # seeded: the same documents, the same order
    other = ShuffleWords(ShuffleWordsConfig(fraction=0.5, seed=2)).apply(batch, None).column("text").to_pylist()
    assert [a != b for a, b in zip(texts, other)] != changed


def test_a_mixture_variant_trains_on_its_own_tokens_beside_fixed_sources(tmp_path):
    mix = ('variants.1.train=["data.sources=[{name: own, manifest: \'variant://tokens\', share: 0.7}, '
           '{name: books, manifest: /data/books/manifest.json, share: 0.3, max_epochs: 2}]"]')
    cfg, variants = load_ablation(ABLATION, [mix])
    v = variants[1]
    assert [s.manifest for s in v.train.data.sources] == [str(ABLATION.parent / "unused.json"),  # a placeholder
                                                          "/data/books/manifest.json"]
    from orchestration.config.train import load_train_config

    raw = load_train_config(cfg.train, v.train_overrides)
    over = data_overrides(raw, "/data/variant/tokens/manifest.json", "/data/t.model")
    job = load_train_config(cfg.train, [*v.train_overrides, *over])
    assert [(s.name, s.manifest, s.share, s.max_epochs) for s in job.data.sources] == [
        ("own", "/data/variant/tokens/manifest.json", 0.7, None), ("books", "/data/books/manifest.json", 0.3, 2.0)]
    assert job.data.manifest is None and job.data.tokenizer == "/data/t.model"
    # the others train on their pipeline's shards alone
    assert data_overrides(variants[0].train, "/m.json", "/t.model") == ["data.manifest=/m.json", "data.tokenizer=/t.model"]
    with pytest.raises(ConfigError, match=r"variants.1 \(no_filters\): data.sources: no source is the variant's own "):
        load_ablation(ABLATION, ['variants.1.train=["data.sources=[{name: b, manifest: /data/b.json}]"]'])
