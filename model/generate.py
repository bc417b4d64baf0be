"""Sampling with a KV cache: the prompt in one forward pass, then one token per step. `tok` below is any tokenizer
with encode, decode and eos_id (pipelines.tokenizer.Tokenizer)."""

from __future__ import annotations

import torch

from model.layers import KVCache
from model.transformer import Decoder
from pipelines.errors import UsageError


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


def check_sampling(max_new_tokens: int, temperature: float, top_k: int) -> None:
    """Sampling arguments in range, before a model is loaded."""
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens: at least 1, got {max_new_tokens}")
    if not temperature >= 0:  # NaN too
        raise UsageError(f"--temperature: 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top-k: 0 (no cut-off) or more, got {top_k}")


def prompt_ids(model: Decoder, tok, prompt: str, max_new_tokens: int) -> tuple[list[int], str | None]:
    """The prompt's token ids (an empty prompt starts after an eos, as a new document), and a note when the
    model's context leaves room for fewer new tokens than asked. A prompt that leaves no room is a UsageError."""
    ids = [int(i) for i in tok.encode(prompt)] or [tok.eos_id]
    room = model.cfg.max_seq_len - len(ids)
    if room < 1:
        raise UsageError(f"the prompt {prompt[:40]!r}{'...' if len(prompt) > 40 else ''} is {len(ids)} tokens: the "
                         f"model's context is {model.cfg.max_seq_len} tokens, so it leaves no room to generate; "
                         "shorten it")
    note = None
    if room < max_new_tokens:
        note = (f"the prompt {prompt[:40]!r} is {len(ids)} tokens of the model's {model.cfg.max_seq_len}: at most "
                f"{room} new tokens (not {max_new_tokens})")
    return ids, note


@torch.no_grad()
def complete(model: Decoder, tok, prompt: str, max_new_tokens: int, temperature: float, top_k: int,
             seed: int) -> str:
    """The generated continuation of `prompt` (an empty prompt starts after an eos, as a new document)."""
    ids, _ = prompt_ids(model, tok, prompt, max_new_tokens)
    return tok.decode(generate(model, ids, max_new_tokens, temperature, top_k, eos_id=tok.eos_id, seed=seed))

