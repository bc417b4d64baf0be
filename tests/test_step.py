"""Gradient accumulation: any micro-batch gives the full batch's gradient; out-of-memory halves it."""

from __future__ import annotations

import pytest
import torch

from model.config import ModelConfig
from model.transformer import IGNORE_INDEX, Decoder
from model.step import accumulate_fitting_memory, is_out_of_memory, run_accumulated


def make_model():
    torch.manual_seed(0)
    return Decoder(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32))


def batch(n=8, t=16):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (n, t), generator=g)
    y = torch.randint(0, 64, (n, t), generator=g)
    y[0, :5] = IGNORE_INDEX  # some padding: the mean is over real positions only
    return x, y


def grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("micro", [1, 2, 4, 8])
def test_accumulated_gradient_equals_the_full_batch_gradient(micro):
    x, y = batch()
    ref = make_model()
    ref(x, y).backward()  # mean over real positions of the whole batch
    model = make_model()
    loss_sum, n_tok = run_accumulated(model, x, y, micro)
    assert n_tok == int((y != IGNORE_INDEX).sum()) == 8 * 16 - 5
    with torch.no_grad():
        assert loss_sum / n_tok == pytest.approx(float(ref(x, y)), rel=1e-5)
    for a, b in zip(grads(model), grads(ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_micro_batch_must_divide_the_share():
    x, y = batch()
    with pytest.raises(ValueError, match="does not divide"):
        run_accumulated(make_model(), x, y, 3)


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error for micro-batches larger than `limit` sequences."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.sizes = model, limit, []

    def forward(self, x, y, reduction="mean"):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x, y, reduction=reduction)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_gradient():
    x, y = batch()
    ref = make_model()
    run_accumulated(ref, x, y, 8)
    wrapped = OutOfMemoryAbove(make_model(), limit=2)
    retries = []

    def on_retry(new_micro):
        retries.append(new_micro)
        wrapped.zero_grad(set_to_none=True)

    loss_sum, n_tok, micro = accumulate_fitting_memory(wrapped, x, y, 8, on_retry)
    assert micro == 2 and retries == [4, 2]
    assert wrapped.sizes == [8, 4, 2, 2, 2, 2]
    for a, b in zip(grads(wrapped.model), grads(ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_other_errors_and_a_micro_batch_of_one_are_not_retried():
    x, y = batch()
    with pytest.raises(torch.OutOfMemoryError):
        accumulate_fitting_memory(OutOfMemoryAbove(make_model(), limit=0), x, y, 8, lambda m: None)
    assert not is_out_of_memory(ValueError("shapes do not match"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
