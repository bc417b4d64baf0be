"""The training data loader (model/data.py, model/permutation.py) on small real token shards: the Feistel
permutation is a bijection, the train/validation split is by document and independent of sharding,
windows are (input, input shifted by one), epochs cover every window once in a fresh order, a resumed
loader continues the same batches, the global batch splits over ranks, validation is shared out evenly."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data import TrainingData, WindowLoader, split_keys, split_streams
from pipelines.hashing import document_key
from model.permutation import Permutation
from pipelines.shard_reader import ShardSet
from token_sets import write_token_set

VOCAB, EOS = 300, 2
TOKENIZER_SHA = "ab" * 32
SEQ_LEN = 32
SEED = 5
VAL_FRACTION = 0.1  # 0.1 x 40 documents = 4.0 exactly in floating point


def make_docs(n_docs: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = {}
    for k in range(n_docs):
        # random hex prefixes: id order is unrelated to creation order
        doc_id = f"{int(rng.integers(0, 2**32)):08x}-doc{k}"
        docs[doc_id] = rng.integers(3, VOCAB, size=int(rng.integers(5, 201))).astype(np.uint16)
    return docs


def write_set(out_dir: Path, docs: dict[str, np.ndarray], target_tokens: int) -> ShardSet:
    """One input shard, its documents in creation order (not id order), written by production's writer."""
    return ShardSet(write_token_set(out_dir, {"test/00000": docs}, target_tokens=target_tokens, eos_id=EOS,
                                    dtype=np.uint16, tokenizer_sha256=TOKENIZER_SHA, vocab_size=VOCAB,
                                    extra={"source": "test"}))


@pytest.fixture(scope="module")
def docs() -> dict[str, np.ndarray]:
    return make_docs(40, seed=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, docs) -> ShardSet:
    ss = write_set(tmp_path_factory.mktemp("shards"), docs, target_tokens=1000)
    assert ss.num_shards >= 3 and ss.num_documents == 40
    return ss


def expected_split(docs: dict[str, np.ndarray], seed: int, val_fraction) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each in stream order (the order written): val = the ceil(fraction * n) smallest keys."""
    n_val = math.ceil(Fraction(str(val_fraction)) * len(docs)) if val_fraction else 0  # decimal, exact
    ranked = sorted(docs, key=lambda d: int(split_keys(np.array([document_key(d)], dtype=np.uint64), seed)[0]))
    val = set(ranked[:n_val])
    return [d for d in docs if d not in val], [d for d in docs if d in val]


def concat(docs: dict[str, np.ndarray], ids: list[str]) -> np.ndarray:
    if not ids:
        return np.empty(0, dtype=np.int64)
    return np.concatenate([np.append(docs[d].astype(np.int64), EOS) for d in ids])


def whole(stream) -> np.ndarray:
    return stream.read(0, stream.num_tokens)


# ---------------------------------------------------------------- permutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 4097])
def test_permutation_is_a_bijection(n):
    p = Permutation(n, seed=42)
    image = p(np.arange(n))
    assert image.dtype == np.int64 and image.shape == (n,)
    assert np.array_equal(np.sort(image), np.arange(n))
    # a pure function of the position: any batch, any order, gives the same images
    sub = np.arange(n)[::-3]
    assert np.array_equal(p(sub), image[sub])
    assert np.array_equal(Permutation(n, seed=42)(np.arange(n)), image)  # same seed, same order
    with pytest.raises(IndexError):
        p(np.array([n]))
    with pytest.raises(IndexError):
        p(np.array([0, n + 5]))
    with pytest.raises(IndexError):
        p(np.array([-1]))  # an int64 -1 is out of range too


@pytest.mark.parametrize("n", [7, 1000, 4097])
def test_permutation_seeds_give_different_orders(n):
    orders = {tuple(Permutation(n, seed)(np.arange(n)).tolist()) for seed in (0, 1, 2, 12345)}
    assert len(orders) == 4
    assert tuple(range(n)) not in orders  # shuffled, not the identity
    if n >= 1000:  # well mixed: few fixed points and displacement of the order of n / 3
        image = Permutation(n, 0)(np.arange(n))
        assert (image == np.arange(n)).sum() < 10
        assert np.abs(image - np.arange(n)).mean() > n / 5


def test_permutation_rejects_empty():
    with pytest.raises(ValueError):
        Permutation(0, 0)


def test_permutation_of_a_scalar_position():
    p = Permutation(7, 0)
    image = p(np.arange(7))
    for i in range(7):
        assert int(p(i)) == image[i]
    with pytest.raises(IndexError):
        p(-1)


# ---------------------------------------------------------------- the train/validation split


def test_split_is_by_document_and_reconstructs_the_streams(shards, docs):
    train, val, info = split_streams(shards, SEED, VAL_FRACTION)
    train_ids, val_ids = expected_split(docs, SEED, VAL_FRACTION)
    assert len(val_ids) == math.ceil(VAL_FRACTION * 40) == 4
    assert set(train_ids).isdisjoint(val_ids) and len(train_ids) + len(val_ids) == 40
    assert info["val_documents"] == 4 and info["train_documents"] == 36
    total = sum(len(a) + 1 for a in docs.values())
    assert train.num_tokens + val.num_tokens == total == shards.total_tokens
    assert info["train_tokens"] == train.num_tokens and info["val_tokens"] == val.num_tokens
    assert np.array_equal(whole(val), concat(docs, val_ids))
    assert np.array_equal(whole(train), concat(docs, train_ids))
    # reads at arbitrary offsets, across run and shard boundaries, agree with the flat stream
    flat = concat(docs, train_ids)
    rng = np.random.default_rng(1)
    for _ in range(50):
        pos = int(rng.integers(0, train.num_tokens))
        n = int(rng.integers(0, train.num_tokens - pos + 1))
        assert np.array_equal(train.read(pos, n), flat[pos : pos + n])
    with pytest.raises(IndexError):
        train.read(train.num_tokens - 2, 3)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.025])
def test_split_sizes_for_other_fractions(shards, docs, fraction):
    train, val, info = split_streams(shards, SEED, fraction)
    train_ids, val_ids = expected_split(docs, SEED, fraction)
    assert info["val_documents"] == len(val_ids) == {0.25: 10, 0.5: 20, 0.025: 1}[fraction]
    assert np.array_equal(whole(val), concat(docs, val_ids))
    assert np.array_equal(whole(train), concat(docs, train_ids))


def test_split_depends_on_the_seed_not_on_the_sharding(tmp_path, shards, docs):
    _, val_a, _ = split_streams(shards, SEED, VAL_FRACTION)
    for target in (150, 5000):  # many small shards (long documents alone in theirs) / a single shard
        other = write_set(tmp_path / f"t{target}", docs, target_tokens=target)
        assert other.num_shards != shards.num_shards
        train_b, val_b, _ = split_streams(other, SEED, VAL_FRACTION)
        assert np.array_equal(whole(val_b), whole(val_a))
        assert np.array_equal(whole(train_b), concat(docs, expected_split(docs, SEED, VAL_FRACTION)[0]))
    # another seed holds out other documents
    assert expected_split(docs, SEED + 1, VAL_FRACTION)[1] != expected_split(docs, SEED, VAL_FRACTION)[1]
    _, val_c, _ = split_streams(shards, SEED + 1, VAL_FRACTION)
    assert np.array_equal(whole(val_c), concat(docs, expected_split(docs, SEED + 1, VAL_FRACTION)[1]))


def test_split_without_validation_and_with_too_much(shards, docs):
    train, val, info = split_streams(shards, SEED, 0.0)
    assert val.num_tokens == 0 and info["val_documents"] == 0
    assert np.array_equal(whole(train), concat(docs, list(docs)))
    with pytest.raises(ValueError):
        split_streams(shards, SEED, 1.0)


def test_val_document_count_is_exact_for_decimal_fractions(tmp_path):
    docs100 = make_docs(100, seed=3)
    ss = write_set(tmp_path, docs100, target_tokens=5000)
    _, _, info = split_streams(ss, SEED, 0.07)
    assert info["val_documents"] == 7  # 7% of 100


# ---------------------------------------------------------------- windows and epochs


def reference_windows(stream) -> dict[tuple, int]:
    """Every window of seq_len + 1 tokens at stride seq_len, read straight from the stream -> its index."""
    n = (stream.num_tokens - 1) // SEQ_LEN
    table = {tuple(stream.read(w * SEQ_LEN, SEQ_LEN + 1).tolist()): w for w in range(n)}
    assert len(table) == n  # random tokens: all windows distinct
    return table


def identify(inputs: torch.Tensor, targets: torch.Tensor, table: dict[tuple, int]) -> list[int]:
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape and inputs.shape[1] == SEQ_LEN
    assert torch.equal(targets[:, :-1], inputs[:, 1:])  # targets are the inputs shifted by one
    rows = torch.cat([inputs, targets[:, -1:]], dim=1)
    return [table[tuple(r.tolist())] for r in rows]  # KeyError if a row is not a window of the stream


def test_windows_are_shifted_pairs_and_each_epoch_covers_every_window_once(shards):
    data = TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION)
    loader = data.train
    nw = loader.num_windows
    assert nw == (loader.stream.num_tokens - 1) // SEQ_LEN == data.info["train_windows"]
    assert nw > 50
    table = reference_windows(loader.stream)
    epoch1 = identify(*loader.windows(0, nw), table)
    epoch2 = identify(*loader.windows(nw, nw), table)
    assert sorted(epoch1) == list(range(nw)) and sorted(epoch2) == list(range(nw))
    assert epoch1 != list(range(nw))  # shuffled
    assert epoch1 != epoch2  # a fresh order each epoch
    assert list(loader.window_index(np.arange(nw))) == epoch1
    # a batch straddling the epoch boundary is the end of epoch 1 then the start of epoch 2
    assert identify(*loader.windows(nw - 3, 6), table) == epoch1[-3:] + epoch2[:3]
    # a loader in stream order (validation) reads windows 0, 1, 2, ...
    ordered = WindowLoader(loader.stream, SEQ_LEN, SEED, shuffle=False)
    assert identify(*ordered.windows(0, 10), table) == list(range(10))
    assert identify(*ordered.windows(nw - 1, 3), table) == [nw - 1, 0, 1]


def test_same_seed_same_batches_other_seed_other_batches(shards):
    a = TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION)
    b = TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION)
    c = TrainingData(shards, SEQ_LEN, SEED + 1, VAL_FRACTION)
    differs = False
    for _ in range(4):
        xa, ya = a.rank_batch(8, 0, 1)
        xb, yb = b.rank_batch(8, 0, 1)
        xc, _ = c.rank_batch(8, 0, 1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        differs |= not torch.equal(xa, xc)
        for d in (a, b, c):
            d.advance(8)
    assert differs
    assert a.position == 32


def test_split_seed_fixes_the_held_out_documents_while_the_order_seed_varies(shards, docs):
    fixed = [TrainingData(shards, SEQ_LEN, seed, VAL_FRACTION, split_seed=SEED) for seed in (SEED, SEED + 1)]
    want = concat(docs, expected_split(docs, SEED, VAL_FRACTION)[1])
    assert all(np.array_equal(whole(d.val.stream), want) for d in fixed)  # the same validation documents
    assert not torch.equal(fixed[0].rank_batch(8, 0, 1)[0], fixed[1].rank_batch(8, 0, 1)[0])  # another order
    state = fixed[1].state_dict()
    assert state["split_seed"] == SEED and state["seed"] == SEED + 1
    with pytest.raises(ValueError, match="split_seed"):  # resuming on another split is refused
        TrainingData(shards, SEQ_LEN, SEED + 1, VAL_FRACTION).load_state_dict(state)
    old = {k: v for k, v in TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION).state_dict().items() if k != "split_seed"}
    TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION).load_state_dict(old)  # a checkpoint from before split_seed


# ---------------------------------------------------------------- resume


def run_steps(data: TrainingData, steps: int, global_batch: int, world: int) -> list[list[tuple]]:
    out = []
    for _ in range(steps):
        out.append([data.rank_batch(global_batch, r, world) for r in range(world)])
        data.advance(global_batch)
    return out


def test_resume_continues_the_same_batches(shards):
    seq_len, gb, world = 64, 12, 2
    a = TrainingData(shards, seq_len, SEED, VAL_FRACTION)
    assert 6 * gb > a.train.num_windows  # the six steps cross an epoch boundary
    steps_a = run_steps(a, 6, gb, world)

    b = TrainingData(shards, seq_len, SEED, VAL_FRACTION)
    steps_b = run_steps(b, 3, gb, world)
    state = b.state_dict()
    assert state["position"] == 3 * gb
    c = TrainingData(shards, seq_len, SEED, VAL_FRACTION)
    c.load_state_dict(dict(state))
    steps_c = run_steps(c, 3, gb, world)

    for got, want in zip(steps_b + steps_c, steps_a):
        for (x, y), (xw, yw) in zip(got, want):
            assert x.shape == (gb // world, seq_len)
            assert torch.equal(x, xw) and torch.equal(y, yw)
    # the steps are not all the same batch
    assert not torch.equal(steps_a[0][0][0], steps_a[3][0][0])

    with pytest.raises(ValueError, match="seed"):
        TrainingData(shards, seq_len, SEED + 1, VAL_FRACTION).load_state_dict(state)
    with pytest.raises(ValueError, match="seq_len"):
        TrainingData(shards, seq_len // 2, SEED, VAL_FRACTION).load_state_dict(state)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainingData(shards, seq_len, SEED, 0.2).load_state_dict(state)
    other_digest = dict(state, manifest_digest="0" * 64)
    with pytest.raises(ValueError, match="manifest_digest"):
        c.load_state_dict(other_digest)


# ---------------------------------------------------------------- ranks


def test_global_batch_splits_over_ranks(shards):
    data = TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION)
    data.advance(40)  # not at the start
    x1, y1 = data.rank_batch(8, 0, 1)
    for world in (2, 4, 8):
        parts = [data.rank_batch(8, r, world) for r in range(world)]
        assert all(p[0].shape == (8 // world, SEQ_LEN) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x1)
        assert torch.equal(torch.cat([p[1] for p in parts]), y1)
    assert len({tuple(r.tolist()) for r in x1}) == 8  # eight distinct windows
    with pytest.raises(ValueError):
        data.rank_batch(6, 0, 4)
    with pytest.raises(ValueError):
        data.rank_batch(7, 1, 2)


def test_val_batches_are_shared_evenly_and_cover_the_first_windows(shards):
    data = TrainingData(shards, SEQ_LEN, SEED, VAL_FRACTION)
    val_stream = data.val.stream
    max_windows = 10
    assert data.val.num_windows >= max_windows
    first = [val_stream.read(w * SEQ_LEN, SEQ_LEN + 1) for w in range(max_windows)]
    per_rank = [list(data.val_batches(max_windows, 2, r, 2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3  # 5 windows each, in batches of 2, 2, 1
    rows = {}
    for r, batches in enumerate(per_rank):
        xs = torch.cat([x for x, _ in batches])
        ys = torch.cat([y for _, y in batches])
        assert torch.equal(ys[:, :-1], xs[:, 1:])
        rows[r] = torch.cat([xs, ys[:, -1:]], dim=1)
    union = sorted(tuple(r.tolist()) for r in torch.cat([rows[0], rows[1]]))
    assert union == sorted(tuple(w.tolist()) for w in first)
    # strided: rank 0 holds windows 0, 2, 4, ... and rank 1 windows 1, 3, 5, ...
    assert [tuple(r.tolist()) for r in rows[0]] == [tuple(first[w].tolist()) for w in range(0, max_windows, 2)]
    assert [tuple(r.tolist()) for r in rows[1]] == [tuple(first[w].tolist()) for w in range(1, max_windows, 2)]
    # one rank alone gets them all, in order
    alone = torch.cat([x for x, _ in data.val_batches(max_windows, 4, 0, 1)])
    assert torch.equal(alone, torch.from_numpy(np.stack([w[:-1] for w in first])))


def test_step_documents_are_the_batch_and_document_steps_invert_them(shards, docs):
    """Which documents a step read, recomputed from the seeded order (nothing logged per step): each rank's
    windows are exactly the token ranges of the documents reported for it, and document_steps gives back
    every (step, rank) that read a document."""
    seq_len, batch, world, steps = 16, 8, 2, 12  # 12 steps cross an epoch of the ~200 training windows
    data = TrainingData(shards, seq_len, seed=3, val_fraction=0.1)
    for step in (1, 7, 12):
        reported = data.step_documents(step, batch, world)
        for rank in range(world):
            mine = [d for d in reported if d["rank"] == rank]
            assert sum(d["tokens"] for d in mine) == (batch // world) * (seq_len + 1)  # every token accounted for
            ids = {shards.index(d["shard"])["doc_id"][d["row"]] for d in mine}
            data.position = (step - 1) * batch
            x, y = data.rank_batch(batch, rank, world)
            tokens = set(torch.cat([x, y[:, -1:]], dim=1).flatten().tolist())
            assert tokens <= set(np.concatenate([np.append(docs[i], EOS) for i in ids]).tolist())
        for d in reported:
            back = data.document_steps(d["shard"], d["row"], steps, batch, world)
            assert {"step": step, "rank": d["rank"]} in back
            assert all(d2["step"] != step or d2["rank"] == d["rank"] or any(
                r["rank"] == d2["rank"] and (r["shard"], r["row"]) == (d["shard"], d["row"]) for r in reported)
                for d2 in back)
    _, val = expected_split(docs, 3, 0.1)
    where = {shards.index(s)["doc_id"][r]: (s, r) for s in range(shards.num_shards)
             for r in range(len(shards.index(s)["doc_id"]))}
    assert data.document_steps(*where[val[0]], steps, batch, world) == []  # validation documents are never read
