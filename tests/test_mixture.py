"""Mixtures of token sources (model/mixture.py): every source's cumulative sequences stay within one of its target
share at every step (a 0.1% source included), schedules change shares from a step on, the batches do not depend on
the worker count, a resumed mixture continues each source where it was, and what cannot be honoured is refused
with its numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import TrainingData
from model.mixture import MixtureData, Phase, allocate, check_supply, normalize, shares_at
from pipelines.shard_reader import ShardSet
from token_sets import write_token_set

EOS, SEQ = 2, 16
RANGES = {"web": (10, 100), "books": (100, 200), "code": (200, 300)}  # each source's token ids: a window tells its source


def targets(phases, batch: int, steps: int) -> np.ndarray:
    return np.cumsum([batch * np.array(shares_at(phases, s)) for s in range(1, steps + 1)], axis=0)


@pytest.mark.parametrize("batch", [8, 32])
def test_every_source_tracks_its_share_within_one_sequence_at_every_step(batch):
    rng = np.random.default_rng(batch)
    for _ in range(5):
        weights = [*rng.random(4).tolist(), 0.001]
        phases = [Phase(1, normalize(weights))]
        counts = allocate(phases, batch, 3000)
        assert (counts.sum(axis=1) == batch).all() and (counts >= 0).all()
        assert np.abs(counts.cumsum(axis=0) - targets(phases, batch, 3000)).max() < 1.0
    tiny = allocate([Phase(1, normalize([0.999, 0.001]))], 32, 5000)[:, 1]
    assert tiny.sum() == 160 and tiny.max() == 1  # 0.001 x 32 x 5000, one sequence every ~31 steps, never starved
    assert (np.diff(np.flatnonzero(tiny)) <= 32).all()


def test_a_schedule_changes_shares_from_a_step_and_resuming_anywhere_gives_the_same_counts():
    phases = [Phase(1, normalize([1, 1, 0])), Phase(101, normalize([0, 1, 3])), Phase(201, normalize([1, 1, 1]))]
    counts = allocate(phases, 8, 300)
    assert np.abs(counts.cumsum(axis=0) - targets(phases, 8, 300)).max() < 1.0
    assert counts[:100, 2].sum() == 0 and counts[100:200, 0].sum() == 0
    for k in (1, 57, 100, 101, 250):
        assert (allocate(phases, 8, 300, start=counts[:k].sum(axis=0), first_step=k + 1) == counts[k:]).all()


def _source(tmp_path, name: str, n_docs: int, seed: int) -> TrainingData:
    lo, hi = RANGES[name]
    rng = np.random.default_rng(seed)
    docs = {f"{name}/f.jsonl#{k}": rng.integers(lo, hi, size=int(rng.integers(8, 60))).astype(np.uint16)
            for k in range(n_docs)}
    manifest = write_token_set(tmp_path / name, {f"{name}/f.jsonl/00000": docs}, target_tokens=500, eos_id=EOS,
                               dtype=np.uint16, tokenizer_sha256="cd" * 32, vocab_size=300)
    return TrainingData(ShardSet(manifest), SEQ, 0, 0.1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    return [_source(tmp, "web", 300, 1), _source(tmp, "books", 120, 2), _source(tmp, "code", 40, 3)]


def _mixture(sources, phases, batch=16) -> MixtureData:
    return MixtureData(["web", "books", "code"], sources, phases, batch, seed=3)


def _source_of(window: torch.Tensor) -> str:
    body = window[window != EOS]
    (name,) = {n for n, (lo, hi) in RANGES.items() if lo <= int(body[0]) < hi}
    assert all(RANGES[name][0] <= int(t) < RANGES[name][1] for t in body)
    return name


def test_batches_hold_each_sources_share_and_do_not_depend_on_the_worker_count(sources):
    phases = [Phase(1, normalize([0.6, 0.3, 0.1]))]
    runs = {}
    for world in (1, 2, 4):
        mix, batches = _mixture(sources, phases), []
        for _ in range(12):
            x = torch.cat([mix.rank_batch(16, r, world)[0] for r in range(world)])
            batches.append(x)
            mix.advance(16)
        runs[world] = torch.stack(batches)
    assert torch.equal(runs[1], runs[2]) and torch.equal(runs[1], runs[4])
    expected = allocate(phases, 16, 12)
    for step, x in enumerate(runs[1]):
        got = [_source_of(w) for w in x]
        assert [got.count(n) for n in ("web", "books", "code")] == expected[step].tolist()
    assert len({tuple(_source_of(w) for w in x) for x in runs[1]}) > 1  # slots are shuffled step to step


def test_a_resumed_mixture_continues_every_source_and_a_later_schedule_change_keeps_positions(sources):
    phases = [Phase(1, normalize([0.5, 0.4, 0.1]))]
    straight = _mixture(sources, phases)
    xs = []
    for _ in range(20):
        xs.append(straight.rank_batch(16, 0, 1)[0])
        straight.advance(16)
    first = _mixture(sources, phases)
    for _ in range(8):
        first.advance(16)
    resumed = _mixture(sources, phases)
    resumed.load_state_dict(first.state_dict())
    for k in range(8, 20):
        assert torch.equal(resumed.rank_batch(16, 0, 1)[0], xs[k])
        resumed.advance(16)
    # an anneal from step 9 on: accepted at step 8, each source continues from its own position
    annealed = _mixture(sources, [phases[0], Phase(9, normalize([0.1, 0.1, 0.8]))])
    annealed.load_state_dict(first.state_dict())
    assert (annealed.positions == first.positions).all()
    x = annealed.rank_batch(16, 0, 1)[0]
    assert [_source_of(w) for w in x].count("code") >= 12
    # the same change from step 5 would rewrite steps already trained: refused, with the numbers
    early = _mixture(sources, [phases[0], Phase(5, normalize([0.1, 0.1, 0.8]))])
    with pytest.raises(ValueError, match=r"shares changed for steps up to the checkpoint's step 8: .*'code'"):
        early.load_state_dict(first.state_dict())
    other = MixtureData(["web", "books"], sources[:2], [Phase(1, normalize([1, 1]))], 16, seed=3)
    with pytest.raises(ValueError, match=r"checkpoint's sources \['books', 'code', 'web'\] differ"):
        other.load_state_dict(first.state_dict())


def test_a_share_a_source_cannot_supply_within_its_cap_is_refused_with_the_numbers(sources):
    phases = [Phase(1, normalize([0.5, 0.3, 0.2]))]
    windows = [s.train.num_windows for s in sources]
    need = check_supply(["web", "books", "code"], windows, [None, None, None], phases, 16, 100, SEQ)
    assert need.tolist() == [800, 480, 320]
    with pytest.raises(ValueError, match=rf"code needs 320 sequences of 16 tokens \(5,120 tokens, .* epochs\) but "
                                         rf"holds {windows[2]:,} \(max_epochs 2: at most {2 * windows[2]:,}\)"):
        check_supply(["web", "books", "code"], windows, [None, None, 2], phases, 16, 100, SEQ)
    with pytest.raises(ValueError, match="at least one source needs a share above 0"):
        normalize([0, 0])


def test_lineage_finds_a_steps_documents_and_a_documents_steps_in_every_source(sources):
    """step_documents and document_steps agree (world 2): each document a step holds names that step and rank,
    and the documents' tokens add up to the batch."""
    phases = [Phase(1, normalize([0.6, 0.3, 0.1])), Phase(7, normalize([0.2, 0.2, 0.6]))]
    mix = _mixture(sources, phases)
    seen = {}
    for step in range(1, 13):
        docs = mix.step_documents(step, 16, 2)
        assert sum(d["tokens"] for d in docs) == 16 * (SEQ + 1)  # every window: seq_len + 1 tokens
        for d in docs:
            seen.setdefault((d["source"], d["shard"], d["row"]), set()).add((step, d["rank"]))
    for (source, shard, row), hits in list(seen.items())[::7]:
        found = {(h["step"], h["rank"]) for h in mix.document_steps(source, shard, row, 12, 16, 2)}
        assert found == hits, (source, shard, row)
