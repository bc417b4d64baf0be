"""Likelihood evaluation: log P(continuation | context) for many requests, batched, on one or several ranks.

Every score here is a sum of token log-likelihoods in nats; callers turn them into bits per byte (divide by
ln 2 and the text's UTF-8 bytes), accuracies and the rest (pipelines/evalsets.py `suite_metrics`). Pure torch: the same
code runs in `tokenmill eval` (one process) and inside training (each rank scores its share).

- A request is (context ids, continuation ids). Its sequence is context + continuation, cut on the left to the
  last `seq_len + 1` tokens (lm-evaluation-harness does the same); the model reads all but the last token and the
  continuation's tokens are scored. A context starts with the eos id: the models are trained on documents each
  followed by eos, so eos is what precedes the first token of a document.
- Batches: requests sorted by length, longest first (the padded batch is as short as its longest member; the
  order is restored afterwards), padded on the right. Causal attention never looks right, so padding changes
  no score; a batch of 1 and a batch of 32 agree within float rounding (tests/test_evaluate.py).
- A long text arrives cut into windows (pipelines/evalsets.py `text_windows`): every token scored exactly once.
- Several ranks: request i is scored by rank `i % world_size`; a sum over ranks (all-reduce) gives every rank
  every score, the same numbers as one rank (up to the batch-size rounding above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Request(NamedTuple):
    context: tuple[int, ...]  # at least one token (the eos that starts a document)
    continuation: tuple[int, ...]  # at least one token: what is scored


@dataclass(frozen=True)
class Score:
    nll: float  # -sum log P(continuation tokens), nats
    greedy: bool  # every continuation token is the model's argmax
    tokens: int  # continuation tokens scored


def _batches(requests: list[Request], batch_size: int):
    order = sorted(range(len(requests)), key=lambda i: (-(len(requests[i].context) + len(requests[i].continuation)), i))
    for k in range(0, len(order), batch_size):
        yield order[k:k + batch_size]


@torch.no_grad()
def score(model: torch.nn.Module, requests: list[Request], seq_len: int, batch_size: int = 32,
          device: str | torch.device = "cpu") -> list[Score]:
    """Every request's score, in request order. `model(ids)` returns logits (batch, seq, vocab)."""
    out: list[Score | None] = [None] * len(requests)
    for idx in _batches(requests, batch_size):
        seqs, conts = [], []
        for i in idx:
            r = requests[i]
            if not r.context or not r.continuation:
                raise ValueError(f"request {i}: needs a context (at least the eos) and a continuation")
            seq = (r.context + r.continuation)[-(seq_len + 1):]
            seqs.append(seq)
            conts.append(min(len(r.continuation), len(seq) - 1))
        width = max(len(s) for s in seqs) - 1
        inputs = torch.zeros(len(seqs), width, dtype=torch.long)
        for row, s in enumerate(seqs):
            inputs[row, :len(s) - 1] = torch.tensor(s[:-1])
        logits = model(inputs.to(device)).float()
        for row, (i, s, c) in enumerate(zip(idx, seqs, conts)):
            pos = torch.arange(len(s) - 1 - c, len(s) - 1, device=logits.device)
            target = torch.tensor(s[-c:], device=logits.device)
            logp = F.log_softmax(logits[row, pos], dim=-1)
            nll = -logp.gather(1, target[:, None]).sum()
            greedy = bool((logp.argmax(-1) == target).all())
            out[i] = Score(float(nll), greedy, c)
    return out  # type: ignore[return-value]


def score_distributed(model: torch.nn.Module, requests: list[Request], seq_len: int, batch_size: int, rank: int,
                      world_size: int, device: str | torch.device = "cpu", group=None) -> list[Score]:
    """`score` with the requests shared out over the ranks of the default process group (or `group`); every rank
    returns every score. Each rank runs the same number of forward passes (a rank short of work scores a copy of
    its last request and drops it), so ranks whose model is sharded (FSDP) stay in step."""
    import torch.distributed as dist

    mine = list(range(rank, len(requests), world_size))
    per_rank = -(-len(requests) // world_size)
    padded = [requests[i] for i in mine] + [requests[mine[-1] if mine else 0]] * (per_rank - len(mine))
    scores = score(model, padded, seq_len, batch_size, device)[:len(mine)] if padded else []
    buf = torch.zeros(3, len(requests), dtype=torch.float64, device=device)
    for i, s in zip(mine, scores):
        buf[0, i], buf[1, i], buf[2, i] = s.nll, float(s.greedy), s.tokens
    dist.all_reduce(buf, group=group)
    nll, greedy, tokens = buf.cpu().tolist()
    return [Score(n, g > 0.5, int(t)) for n, g, t in zip(nll, greedy, tokens)]
