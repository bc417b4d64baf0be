"""A weighted mixture of token sources: how many sequences of every global batch each source gives.

- Shares: per source a weight, normalized to sum 1; a schedule may change them from a given step on.
- Composition (`allocate`): the target of source i after step s is T_i(s) = sum over steps t <= s of B * share_i(t)
  (B sequences per global batch). Step s gives source i `c_i(s)` sequences so that its cumulative count A_i(s)
  stays within one sequence of T_i(s): the deficits d_i = T_i(s) - A_i(s-1) are rounded down and the sequences
  left over go to the largest remainders (ties: the earlier source). A source with 0.1% of the tokens gets a
  sequence every ~1,000 / B steps, at its rate, never starved (an `int(share * B)` rule would give it none).
- Everything is a function of the schedule and B only: the same counts at any worker count, on any machine, and a
  resumed job recomputes them (a schedule changed only after the checkpoint's step gives the same counts up to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Phase:
    from_step: int  # the first step (1-based) these shares apply to
    shares: tuple[float, ...]  # one per source, normalized


def normalize(weights: list[float], what: str = "shares") -> tuple[float, ...]:
    if any(w < 0 for w in weights):
        raise ValueError(f"{what}: shares cannot be negative, got {weights}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"{what}: at least one source needs a share above 0, got {weights}")
    return tuple(float(w) / total for w in weights)


def shares_at(phases: list[Phase], step: int) -> tuple[float, ...]:
    current = phases[0].shares
    for p in phases:
        if p.from_step <= step:
            current = p.shares
    return current


def allocate(phases: list[Phase], global_batch: int, steps: int, start: np.ndarray | None = None,
             first_step: int = 1) -> np.ndarray:
    """(steps - first_step + 1, sources) int64: each step's sequences per source, for steps first_step..steps.
    `start`: the cumulative counts after step first_step - 1 (zeros at the start)."""
    n = len(phases[0].shares)
    cum = np.zeros(n, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64).copy()
    out = np.zeros((max(steps - first_step + 1, 0), n), dtype=np.int64)
    for row, step in enumerate(range(first_step, steps + 1)):
        # T(step) in closed form (not summed step by step): the same floats whichever step a computation starts
        # from, so a resumed job breaks ties between equal remainders exactly as the uninterrupted one did
        target = _target_before(phases, global_batch, step + 1)
        deficit = target - cum
        counts = np.floor(np.maximum(deficit, 0.0)).astype(np.int64)
        left = global_batch - int(counts.sum())
        rest = deficit - counts
        if left > 0:  # the largest remainders, the earlier source first on a tie
            for i in sorted(range(n), key=lambda k: (-rest[k], k))[:left]:
                counts[i] += 1
        while left < 0:  # over-served sources (their deficit was zeroed) gave more than B: take from the smallest
            i = min((k for k in range(n) if counts[k] > 0), key=lambda k: (rest[k], -k))
            counts[i] -= 1
            rest[i] += 1
            left += 1
        out[row] = counts
        cum += counts
    return out


def targets_through(phases: list[Phase], global_batch: int, step: int) -> np.ndarray:
    """T(step): every source's real-valued cumulative target in sequences after `step` steps."""
    return _target_before(phases, global_batch, step + 1)


def _target_before(phases: list[Phase], global_batch: int, first_step: int) -> np.ndarray:
    """T(first_step - 1): the real-valued cumulative targets before first_step (per phase: steps x B x shares)."""
    n = len(phases[0].shares)
    target = np.zeros(n)
    bounds = [p.from_step for p in phases[1:]] + [first_step]
    prev = 1
    for p, end in zip(phases, bounds):
        end = min(end, first_step)
        if end > prev:
            target += global_batch * (end - prev) * np.asarray(p.shares)
            prev = end
    return target


class MixtureData:
    """Training windows from several token sources (each a `model.data.TrainingData`: its own train/validation split
    and seeded window order), composed per global batch by `allocate`. The slots of a global batch are the
    sources' sequences in source order, then shuffled by a seeded permutation of the batch (so every rank sees the
    mixture); rank r of W takes slots [r B/W, (r+1) B/W). The state is the step and each source's position (its
    samples consumed): a resumed job continues every source where it was."""

    def __init__(self, names: list[str], sources: list, phases: list[Phase], global_batch: int, seed: int):
        if len(names) != len(sources) or len(phases[0].shares) != len(sources):
            raise ValueError("one name and one share per source")
        self.names, self.sources, self.phases = list(names), list(sources), list(phases)
        self.global_batch, self.seed = global_batch, seed
        self.positions = np.zeros(len(sources), dtype=np.int64)
        self.step = 0  # steps consumed
        self.seq_len = sources[0].seq_len
        self.info = {"sources": {n: s.info for n, s in zip(names, sources)}}

    @property
    def position(self) -> int:
        return self.step * self.global_batch

    def counts(self, step: int) -> np.ndarray:
        """Sequences per source in step `step` (1-based), the one after the current position."""
        if step != self.step + 1:
            raise ValueError(f"counts of step {step} asked at step {self.step}")
        return allocate(self.phases, self.global_batch, step, self.positions, step)[0]

    def slots(self, step: int) -> list[tuple[int, int]]:
        """(source, the source's sample position) of every slot of step `step`'s global batch, in slot order."""
        from model.permutation import Permutation

        counts = self.counts(step)
        ordered = [(i, int(self.positions[i]) + k) for i, c in enumerate(counts.tolist()) for k in range(c)]
        order = Permutation(self.global_batch, self.seed * 1_000_003 + 7_919 * step)(np.arange(self.global_batch))
        return [ordered[j] for j in order.tolist()]

    def _slots_at(self, step: int) -> list[tuple[int, int]]:
        """`slots` of any step, from the positions the schedule gives before it (lineage: no state needed)."""
        saved = (self.step, self.positions)
        self.step = step - 1
        self.positions = allocate(self.phases, self.global_batch, step - 1).sum(axis=0) if step > 1 else \
            np.zeros(len(self.sources), dtype=np.int64)
        try:
            return self.slots(step)
        finally:
            self.step, self.positions = saved

    def step_documents(self, step: int, global_batch: int, world: int) -> list[dict]:
        """The documents of step `step`'s global batch, per rank: its source, shard, row and tokens."""
        per, out = global_batch // world, []
        slots = self._slots_at(step)
        for rank in range(world):
            for i in sorted({i for i, _ in slots[rank * per:(rank + 1) * per]}):
                windows = self.sources[i].train.window_index(
                    np.array([p for j, p in slots[rank * per:(rank + 1) * per] if j == i])).tolist()
                out += [{"rank": rank, "source": self.names[i], **d}
                        for d in self.sources[i].window_documents(windows)]
        return out

    def document_steps(self, source: str, shard: int, row: int, steps: int, global_batch: int,
                       world: int) -> list[dict]:
        """The steps and ranks whose batches held tokens of document (shard, row) of `source`."""
        i = self.names.index(source)
        data = self.sources[i]
        docs, starts, sizes = data.train.stream.docs
        hit = np.flatnonzero((docs[:, 0] == shard) & (docs[:, 1] == row))
        if not len(hit):
            return []
        s, e = int(starts[hit[0]]), int(starts[hit[0]] + sizes[hit[0]])
        w_lo, w_hi = max(0, -(-(s - self.seq_len) // self.seq_len)), (e - 1) // self.seq_len
        counts = allocate(self.phases, global_batch, steps)
        before = np.concatenate([np.zeros((1, len(self.sources)), np.int64), counts.cumsum(axis=0)[:-1]])
        # the source's sample positions that read one of the document's windows, then the steps that drew them
        taken = int(counts[:, i].sum())
        pos = np.arange(taken)
        w = data.train.window_index(pos) if taken else np.zeros(0, np.int64)
        wanted = set(pos[(w >= w_lo) & (w <= w_hi)].tolist())
        out, per = set(), global_batch // world
        for step in sorted({int(np.searchsorted(before[:, i], p, side="right")) for p in wanted}):
            for k, (j, p) in enumerate(self._slots_at(step)):
                if j == i and p in wanted:
                    out.add((step, k // per))
        return [{"step": st, "rank": r} for st, r in sorted(out)]

    def rank_batch(self, global_batch: int, rank: int, world: int):
        import torch

        if global_batch != self.global_batch or global_batch % world:
            raise ValueError(f"global batch of {global_batch} sequences (mixture built for {self.global_batch}) "
                             f"does not split over {world} ranks")
        per = global_batch // world
        mine = self.slots(self.step + 1)[rank * per:(rank + 1) * per]
        xs, ys = [], []
        for i, pos in mine:
            x, y = self.sources[i].train.windows(pos, 1)
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    def prefetch(self, global_batch: int, rank: int, world: int, steps: int) -> None:
        """Start fetching the blocks of this rank's `steps` batches after the next one (remote sources)."""
        if steps <= 0 or all(getattr(s.shards, "cache", None) is None for s in self.sources):
            return
        per, saved = global_batch // world, (self.step, self.positions)
        try:
            for _ in range(steps):
                self.positions = self.positions + self.counts(self.step + 1)
                self.step += 1
                for i, pos in self.slots(self.step + 1)[rank * per:(rank + 1) * per]:
                    self.sources[i].shards.prefetch(self.sources[i].train.spans(pos, 1))
        finally:
            self.step, self.positions = saved

    def advance(self, global_batch: int) -> None:
        self.positions += self.counts(self.step + 1)
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "positions": dict(zip(self.names, self.positions.tolist())),
                "sources": {n: s.state_dict() for n, s in zip(self.names, self.sources)}}

    def load_state_dict(self, state: dict) -> None:
        """Refuses another set of sources, a changed source, or a schedule that changed before the saved step."""
        saved = state.get("sources", {})
        if sorted(saved) != sorted(self.names):
            raise ValueError(f"checkpoint's sources {sorted(saved)} differ from this job's {sorted(self.names)}: "
                             "resuming would not continue the same mixture")
        for name, source in zip(self.names, self.sources):
            mine = source.state_dict()
            for key in ("seed", "seq_len", "val_fraction", "manifest_digest"):
                if saved[name].get(key) != mine[key]:
                    raise ValueError(f"source {name!r}: checkpoint's {key} {saved[name].get(key)!r} differs from this "
                                     f"job's {mine[key]!r}")
        step = int(state["step"])
        positions = np.array([state["positions"][n] for n in self.names], dtype=np.int64)
        expected = allocate(self.phases, self.global_batch, step).sum(axis=0) if step else np.zeros_like(positions)
        if not np.array_equal(expected, positions):
            diff = {n: (int(p), int(e)) for n, p, e in zip(self.names, positions, expected) if p != e}
            raise ValueError(f"the mixture's shares changed for steps up to the checkpoint's step {step}: sources "
                             f"(checkpoint position, this schedule's) {diff}; change shares only for later steps")
        self.step, self.positions = step, positions


def check_supply(names: list[str], windows: list[int], max_epochs: list[float | None], phases: list[Phase],
                 global_batch: int, steps: int, seq_len: int) -> np.ndarray:
    """Every source's need in sequences over the whole job (the allocation's totals); a ValueError naming each source
    that cannot supply it within its repetition cap (`max_epochs` passes over its training windows)."""
    need = allocate(phases, global_batch, steps).sum(axis=0)
    short = []
    for name, n, cap, want in zip(names, windows, max_epochs, need.tolist()):
        if cap is not None and want > cap * n:
            short.append(f"{name} needs {want:,} sequences of {seq_len} tokens ({want * seq_len:,} tokens, "
                         f"{want / max(n, 1):.2f} epochs) but holds {n:,} (max_epochs {cap:g}: at most "
                         f"{int(cap * n):,})")
    if short:
        raise ValueError("the mixture's shares ask more than a source can give: " + "; ".join(short)
                         + f" (steps {steps} x {global_batch} sequences); lower its share, raise its max_epochs or "
                         "train fewer steps")
    return need
