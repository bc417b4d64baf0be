"""One training step's forward/backward (gradient accumulation over micro-batches, halving them on out-of-memory)
and the validation loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from model.transformer import IGNORE_INDEX


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_accumulated(model, x: torch.Tensor, y: torch.Tensor, micro: int) -> tuple[float, int]:
    """Forward/backward of this rank's share of the batch in micro-batches of `micro` sequences.

    Each micro-batch's loss is its token-loss sum divided by the rank's total target tokens, so the
    accumulated gradient is that of the mean over the whole share, whatever `micro` is. (FSDP then
    averages over ranks, whose shares hold the same number of tokens.) Gradient reduction across ranks
    happens only on the last micro-batch. Returns (loss sum, target tokens) of the share.
    """
    n = x.shape[0]
    if micro < 1 or n % micro:
        raise ValueError(f"micro-batch {micro} does not divide the {n} sequences of this rank")
    n_tok = int((y != IGNORE_INDEX).sum())
    total = 0.0
    chunks = range(0, n, micro)
    sync = getattr(model, "set_requires_gradient_sync", None)
    for i, start in enumerate(chunks):
        last = i == len(chunks) - 1
        if sync is not None:
            sync(last)
        loss_sum = model(x[start : start + micro], y[start : start + micro], reduction="sum")
        (loss_sum / n_tok).backward()
        total += float(loss_sum.detach())
    return total, n_tok


def accumulate_fitting_memory(model, x: torch.Tensor, y: torch.Tensor, micro: int, on_retry) -> tuple[float, int, int]:
    """run_accumulated, halving the micro-batch on out-of-memory (so accumulation steps double and the
    global batch stays). `on_retry(new_micro)` clears the partial gradients. Returns (loss sum, tokens,
    the micro-batch that fit). Under FSDP all ranks have the same shapes and so run out of memory alike."""
    while True:
        try:
            loss_sum, n_tok = run_accumulated(model, x, y, micro)
            return loss_sum, n_tok, micro
        except Exception as exc:
            if not is_out_of_memory(exc) or micro == 1:
                raise
            micro //= 2
            on_retry(micro)


@torch.no_grad()
def val_tokens_and_bytes(data, max_windows: int, world: int, token_bytes: np.ndarray) -> tuple[int, int]:
    """The target tokens of the validation windows `evaluate` scores, and the UTF-8 bytes they stand for
    (`token_bytes`: bytes per token id, `pipelines.tokenizer.Tokenizer.token_bytes`). Bits per byte is then
    loss x tokens / (ln 2 x bytes): comparable across tokenizers, as the evaluation suite's."""
    n = (min(max_windows, data.val.num_windows) // world) * world
    tokens = nbytes = 0
    for _, y in data.val_batches(n, 256, 0, 1):
        tokens += y.numel()
        nbytes += int(token_bytes[y.numpy()].sum())
    return tokens, nbytes


def evaluate(model, data, max_windows: int, batch: int, rank: int, world: int, device) -> float | None:
    """Mean loss over the first (max_windows rounded down to a multiple of world) validation windows of
    `data` (model.data.TrainingData), all-reduced over the ranks."""
    n = (min(max_windows, data.val.num_windows) // world) * world
    if n == 0:
        return None
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in data.val_batches(n, batch, rank, world):
        x, y = x.to(device), y.to(device)
        totals[0] += model(x, y, reduction="sum").double()
        totals[1] += (y != IGNORE_INDEX).sum()
    model.train()
    dist.all_reduce(totals)
    return float(totals[0] / totals[1])
