"""Parameter and FLOP counts, for MFU (model FLOPs utilisation)."""

from __future__ import annotations

import time

import torch

from model.config import ModelConfig

# dense bf16 peak of one device, FLOP/s (no sparsity); the name is matched against torch.cuda.get_device_name()
GPU_PEAK_BF16 = {"H200": 989.5e12, "H100": 989.5e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by kind. `total` counts a tied embedding once."""
    d, L, hd = cfg.d_model, cfg.n_layers, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2  # q, o + k, v
    ffn = 3 * d * cfg.ffn_dim
    norms = 2 * d
    blocks = L * (attn + ffn + norms)
    embedding = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return {"embedding": embedding, "blocks": blocks, "final_norm": d, "lm_head": head,
            "total": embedding + blocks + d + head, "non_embedding": blocks + d}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward), PaLM appendix B style:
    6 x (weights used in matmuls, the output projection included; norms and the embedding lookup are not
    matmuls) + 12 x n_layers x (n_heads x head_dim) x seq_len for the attention scores and the weighted sum
    (counted over the full sequence, as is customary, though causal attention could skip half)."""
    d, L, hd = cfg.d_model, cfg.n_layers, cfg.head_dim
    matmul = L * (d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2 + 3 * d * cfg.ffn_dim) + cfg.vocab_size * d
    return 6.0 * matmul + 12.0 * L * cfg.n_heads * hd * seq_len


def gpu_peak_flops(device_name: str) -> float | None:
    for key, peak in GPU_PEAK_BF16.items():
        if key in device_name:
            return peak
    return None


def cpu_peak_flops(threads: int, size: int = 512, seconds: float = 0.3) -> float:
    """FLOP/s of a float32 matmul on this worker's threads: the CPU's practical peak, the MFU denominator
    (CPUs have no single datasheet number as GPUs do)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2.0 * size**3 * n / (time.perf_counter() - t0)
