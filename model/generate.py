"""Sampling with a KV cache: the prompt in one forward pass, then one token per step."""

from __future__ import annotations

import torch

from model.layers import KVCache
from model.transformer import Decoder


@torch.no_grad()
def generate(model: Decoder, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.8,
             top_k: int | None = 50, eos_id: int | None = None, seed: int = 0, use_cache: bool = True) -> list[int]:
    """New token ids after the prompt (stops at eos). temperature 0 = greedy. use_cache=False recomputes
    the whole sequence every step (the reference the cache must agree with)."""
    cfg = model.cfg
    if not prompt_ids:
        raise ValueError("empty prompt: give at least one token (e.g. the bos id)")
    budget = cfg.max_seq_len - len(prompt_ids)
    if budget < 1:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room under max_seq_len {cfg.max_seq_len}")
    max_new_tokens = min(max_new_tokens, budget)
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    seq = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    cache = KVCache(cfg, 1, cfg.max_seq_len, device=device, dtype=next(model.parameters()).dtype) if use_cache else None
    out: list[int] = []
    step_input = seq
    for _ in range(max_new_tokens):
        logits = model(step_input if use_cache else seq, cache=cache)[0, -1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=gen))
        out.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
        step_input = torch.tensor([[nxt]], dtype=torch.long, device=device)
        seq = torch.cat([seq, step_input], dim=1)
    return out
