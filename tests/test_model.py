"""The decoder (model/): grouped-query attention against a naive reference, rotary embeddings are relative,
the causal mask, FLOP and parameter counts against hand counts, the padded loss, the KV cache against
full recomputation, the safetensors export round trip, optimizer groups and the LR schedule, config checks
and the presets' sizes. Everything runs on tiny CPU models in a few seconds."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from model.config import ModelConfig
from model.export import CONFIG, WEIGHTS, load_export, save_export
from model.flops import flops_per_token, param_counts
from model.generate import generate
from model.layers import Attention, KVCache, apply_rope, rope_tables
from model.optim import build_optimizer, lr_at, param_groups
from model.transformer import IGNORE_INDEX, Decoder
from repo_paths import REPO

PRESETS = REPO / "configs" / "model"


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    base.update(kw)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg


def make_model(seed: int = 0, **kw) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(tiny_cfg(**kw)).eval()


# ---------------------------------------------------------------- grouped-query attention


def reference_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding written independently of model.layers: pair (x[2i], x[2i+1]) as the complex number
    x[2i] + j x[2i+1], multiplied by exp(j * pos * theta^(-2i/d)) for positions 0..seq-1."""
    b, h, t, d = x.shape
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * freqs[None, :]
    z = torch.view_as_complex(x.double().reshape(b, h, t, d // 2, 2).contiguous())
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).reshape(b, h, t, d).float()


def naive_attention(attn: Attention, x: torch.Tensor, theta: float) -> torch.Tensor:
    b, t, _ = x.shape
    h, kv, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.q_proj.weight.T).view(b, t, h, hd).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T).view(b, t, kv, hd).transpose(1, 2)
    v = (x @ attn.v_proj.weight.T).view(b, t, kv, hd).transpose(1, 2)
    q, k = reference_rope(q, theta), reference_rope(k, theta)
    # query head i uses kv head i // (h / kv)
    k = k.repeat_interleave(h // kv, dim=1)
    v = v.repeat_interleave(h // kv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    return y.transpose(1, 2).reshape(b, t, h * hd) @ attn.o_proj.weight.T


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_gqa_shapes_and_equality_with_naive_repeated_kv_attention(n_kv_heads):
    cfg = tiny_cfg(n_heads=4, n_kv_heads=n_kv_heads, d_model=32)
    head_dim = 32 // 4
    torch.manual_seed(n_kv_heads)
    attn = Attention(cfg).eval()
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
        torch.nn.init.normal_(lin.weight, 0.0, 0.3)  # large enough that attention is far from uniform
    assert attn.q_proj.out_features == 4 * head_dim
    assert attn.k_proj.out_features == attn.v_proj.out_features == n_kv_heads * head_dim
    assert attn.k_proj.weight.shape == (n_kv_heads * head_dim, 32)
    assert attn.o_proj.in_features == 4 * head_dim and attn.o_proj.out_features == 32

    b, t = 2, 7
    x = torch.randn(b, t, 32)
    cos, sin = rope_tables(head_dim, t, cfg.rope_theta)
    with torch.no_grad():
        got = attn(x, cos, sin)
        want = naive_attention(attn, x, cfg.rope_theta)
    assert got.shape == (b, t, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    model = make_model(n_heads=4, n_kv_heads=n_kv_heads)
    with torch.no_grad():
        logits = model(torch.randint(0, cfg.vocab_size, (3, 5)))
    assert logits.shape == (3, 5, cfg.vocab_size)


def test_gqa_groups_query_heads_by_consecutive_blocks():
    """With 2 kv heads over 4 query heads, query heads 0,1 share kv head 0: zeroing kv head 1's value weights
    must leave the output of query heads 0 and 1 unchanged and zero that of heads 2 and 3."""
    cfg = tiny_cfg(n_heads=4, n_kv_heads=2)
    torch.manual_seed(1)
    attn = Attention(cfg).eval()
    hd = cfg.head_dim
    with torch.no_grad():
        attn.v_proj.weight[hd:] = 0.0  # kv head 1 carries nothing
        attn.o_proj.weight.copy_(torch.eye(32))  # output = concatenated heads
        x = torch.randn(1, 6, 32)
        cos, sin = rope_tables(hd, 6, cfg.rope_theta)
        y = attn(x, cos, sin)
    assert torch.count_nonzero(y[..., : 2 * hd]) > 0
    assert torch.count_nonzero(y[..., 2 * hd :]) == 0


# ---------------------------------------------------------------- rotary embeddings


def rope_at(x: torch.Tensor, pos: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return apply_rope(x.view(1, 1, 1, -1), cos[pos : pos + 1], sin[pos : pos + 1]).view(-1)


def test_rope_scores_depend_only_on_relative_position():
    hd = 16
    cos, sin = rope_tables(hd, 64, 10000.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(hd, generator=g), torch.randn(hd, generator=g)

    def score(i, j):
        return float(rope_at(q, i, cos, sin) @ rope_at(k, j, cos, sin))

    for offset in (0, 1, 3, 17):
        scores = [score(j + offset, j) for j in (0, 5, 20, 40)]
        for s in scores[1:]:
            assert s == pytest.approx(scores[0], abs=1e-4)
    by_offset = [score(10 + d, 10) for d in (0, 1, 3, 17)]
    for a in range(len(by_offset)):
        for c in range(a + 1, len(by_offset)):
            assert abs(by_offset[a] - by_offset[c]) > 1e-3
    # rotation preserves the norm, and position 0 is the identity
    assert torch.allclose(rope_at(q, 0, cos, sin), q)
    assert float(rope_at(q, 33, cos, sin).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def test_rope_tables_match_the_formula():
    cos, sin = rope_tables(8, 5, 100.0)
    assert cos.shape == sin.shape == (5, 4)
    # position 3, pair 1: angle 3 * 100^(-2/8)
    angle = 3 * 100.0 ** (-2 / 8)
    assert float(cos[3, 1]) == pytest.approx(math.cos(angle), abs=1e-6)
    assert float(sin[3, 1]) == pytest.approx(math.sin(angle), abs=1e-6)


# ---------------------------------------------------------------- causal mask


def test_causal_mask_future_tokens_do_not_change_past_logits():
    model = make_model(3, init_std=0.2)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 97, (2, 16), generator=g)
    p = 6
    changed_future = idx.clone()
    changed_future[:, p + 1 :] = (idx[:, p + 1 :] + 1 + torch.randint(0, 90, (2, 16 - p - 1), generator=g)) % 97
    assert (changed_future[:, p + 1 :] != idx[:, p + 1 :]).all()
    changed_p = idx.clone()
    changed_p[:, p] = (idx[:, p] + 5) % 97
    with torch.no_grad():
        base, fut, at_p = model(idx), model(changed_future), model(changed_p)
    torch.testing.assert_close(fut[:, : p + 1], base[:, : p + 1], atol=1e-6, rtol=0)
    assert (fut[:, p + 1 :] - base[:, p + 1 :]).abs().amax() > 1e-3
    torch.testing.assert_close(at_p[:, :p], base[:, :p], atol=1e-6, rtol=0)
    assert (at_p[:, p] - base[:, p]).abs().amax(dim=-1).min() > 1e-3  # every row changes at p


# ---------------------------------------------------------------- FLOPs and parameters


def test_flops_per_token_against_a_hand_count():
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    # head_dim 64/4 = 16; FFN by Llama's rule: int(8*64/3) = 170, rounded up to a multiple of 64 = 192
    assert cfg.head_dim == 16 and cfg.ffn_dim == 192
    q = 64 * (4 * 16)
    k = 64 * (2 * 16)
    v = 64 * (2 * 16)
    o = (4 * 16) * 64
    ffn = 3 * 64 * 192
    per_layer = q + k + v + o + ffn  # 4096 + 2048 + 2048 + 4096 + 36864 = 49152
    assert per_layer == 49152
    matmul_weights = 2 * per_layer + 100 * 64  # + output projection = 104704
    seq_len = 32
    attention = 12 * 2 * (4 * 16) * seq_len  # 49152
    expected = 6 * matmul_weights + attention
    assert expected == 677376
    assert flops_per_token(cfg, seq_len) == pytest.approx(expected)
    # the attention term scales with seq_len, the weights term does not
    assert flops_per_token(cfg, 2 * seq_len) - flops_per_token(cfg, seq_len) == pytest.approx(attention)
    # tying does not change the FLOPs: the output projection is a matmul either way
    untied = ModelConfig(**{**cfg.to_dict(), "tie_embeddings": False})
    assert flops_per_token(untied, seq_len) == pytest.approx(expected)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("n_kv_heads", [1, 4])
def test_param_counts_equal_the_module_parameters(tie, n_kv_heads):
    cfg = tiny_cfg(tie_embeddings=tie, n_kv_heads=n_kv_heads, ffn_hidden=48)
    model = Decoder(cfg)
    actual = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    counts = param_counts(cfg)
    assert counts["total"] == actual
    assert counts["embedding"] == model.tok_emb.weight.numel()
    assert counts["lm_head"] == (0 if tie else model.lm_head.weight.numel())
    assert counts["non_embedding"] == actual - counts["embedding"] - counts["lm_head"]
    assert (model.lm_head.weight is model.tok_emb.weight) == tie


# ---------------------------------------------------------------- loss with padding


def test_loss_ignores_padding_positions():
    model = make_model(4, init_std=0.1)
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(0, 97, (3, 10), generator=g)
    targets = torch.randint(0, 97, (3, 10), generator=g)
    targets[0, 7:] = IGNORE_INDEX
    targets[1, :2] = IGNORE_INDEX
    targets[2, 4] = IGNORE_INDEX
    real = targets != IGNORE_INDEX
    count = int(real.sum())
    assert count == 30 - 3 - 2 - 1
    with torch.no_grad():
        logits = model(idx)
        mean = model(idx, targets)
        total = model(idx, targets, reduction="sum")
    logp = torch.log_softmax(logits.double(), dim=-1)
    hand = 0.0
    for b in range(3):
        for t in range(10):
            if real[b, t]:
                hand -= float(logp[b, t, targets[b, t]])
    assert float(total) == pytest.approx(hand, rel=1e-5)
    assert float(mean) == pytest.approx(hand / count, rel=1e-5)
    assert float(total) / count == pytest.approx(float(mean), rel=1e-6)
    # the ignored targets' values do not matter
    other = targets.clone()
    other[~real] = IGNORE_INDEX
    with torch.no_grad():
        assert float(model(idx, other)) == float(mean)


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_generate_with_cache_equals_full_recomputation(n_kv_heads):
    model = make_model(5, n_kv_heads=n_kv_heads, init_std=0.3)
    prompt = [5, 17, 3, 60]
    greedy_cached = generate(model, prompt, 12, temperature=0.0, use_cache=True)
    greedy_full = generate(model, prompt, 12, temperature=0.0, use_cache=False)
    assert greedy_cached == greedy_full and len(greedy_full) == 12
    with torch.no_grad():  # the first greedy token is the argmax of the prompt's last logits
        assert greedy_full[0] == int(model(torch.tensor([prompt]))[0, -1].argmax())
    sampled_cached = generate(model, prompt, 12, temperature=1.0, top_k=20, seed=11, use_cache=True)
    sampled_full = generate(model, prompt, 12, temperature=1.0, top_k=20, seed=11, use_cache=False)
    assert sampled_cached == sampled_full
    assert generate(model, prompt, 12, temperature=1.0, top_k=20, seed=11) == sampled_cached  # same seed
    assert generate(model, prompt, 12, temperature=1.0, top_k=20, seed=12) != sampled_cached  # other seed


def test_generate_respects_max_seq_len_and_eos():
    model = make_model(6, init_std=0.3)
    out = generate(model, list(range(1, 29)), 50, temperature=0.0)
    assert len(out) == 32 - 28  # only the room left under max_seq_len
    first = generate(model, [1, 2, 3], 5, temperature=0.0)
    assert generate(model, [1, 2, 3], 5, temperature=0.0, eos_id=first[1]) == first[: first.index(first[1]) + 1]
    with pytest.raises(ValueError):
        generate(model, [], 3)
    with pytest.raises(ValueError):
        generate(model, list(range(32)), 3)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_incremental_forward_with_kv_cache_matches_full_forward(n_kv_heads):
    model = make_model(7, n_kv_heads=n_kv_heads)
    cfg = model.cfg
    g = torch.Generator().manual_seed(7)
    seq = torch.randint(0, 97, (2, 14), generator=g)
    with torch.no_grad():
        full = model(seq)
        cache = KVCache(cfg, 2, cfg.max_seq_len)
        parts = [model(seq[:, :5], cache=cache)]  # the prompt
        assert cache.length == 5
        parts.append(model(seq[:, 5:8], cache=cache))  # a chunk of 3 after a cached prefix
        for t in range(8, 14):  # then token by token
            parts.append(model(seq[:, t : t + 1], cache=cache))
        assert cache.length == 14
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_kv_cache_bytes_per_token():
    mha = tiny_cfg(n_layers=3, n_heads=4, n_kv_heads=4, d_model=32)
    mqa = tiny_cfg(n_layers=3, n_heads=4, n_kv_heads=1, d_model=32)
    assert KVCache.bytes_per_token(mha) == 2 * 3 * 4 * 8 * 4 == 768
    assert KVCache.bytes_per_token(mqa) == 2 * 3 * 1 * 8 * 4 == 192
    assert KVCache.bytes_per_token(mha) == 4 * KVCache.bytes_per_token(mqa)  # n_heads times smaller
    assert KVCache.bytes_per_token(mha, torch.bfloat16) == 2 * 3 * 4 * 8 * 2
    for cfg in (mha, mqa):  # the allocated cache agrees
        cache = KVCache(cfg, batch=1, max_len=10)
        assert cache.k.nbytes + cache.v.nbytes == 10 * KVCache.bytes_per_token(cfg)


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("tie", [True, False])
def test_export_round_trip_reproduces_logits(tmp_path, tie):
    model = make_model(8, tie_embeddings=tie)
    with torch.no_grad():  # every tensor distinct from its init, norms included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if not tie:
        assert not torch.equal(model.lm_head.weight, model.tok_emb.weight)
    idx = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        before = model(idx)
    out = save_export(tmp_path / "export", model.state_dict(), model.cfg, None, extra={"step": 7})
    assert (out / WEIGHTS).is_file() and (out / CONFIG).is_file()
    with safe_open(str(out / WEIGHTS), framework="pt") as f:
        keys = set(f.keys())
    assert ("lm_head.weight" in keys) == (not tie)
    loaded, meta = load_export(out)
    assert meta["step"] == 7 and meta["model"] == model.cfg.to_dict()
    assert not loaded.training
    with torch.no_grad():
        after = loaded(idx)
    assert torch.equal(after, before)
    if tie:
        assert loaded.lm_head.weight is loaded.tok_emb.weight
    else:
        assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
        assert loaded.lm_head.weight is not loaded.tok_emb.weight


def test_export_is_byte_reproducible_across_processes(tmp_path):
    """The same weights give the same file in any process (safetensors' own writer orders its metadata
    from a Rust HashMap: a resumed job's export had another sha256 than the uninterrupted one's)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "from model.config import ModelConfig\nfrom model.transformer import Decoder\n"
            "from model.export import save_export\n"
            "torch.manual_seed(0)\n"
            "cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16,"
            " tie_embeddings=False)\n"
            "save_export(sys.argv[1], Decoder(cfg).to(torch.bfloat16).state_dict(), cfg, None)\n")
    digests = set()
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"e{i}")], check=True)
        digests.add(hashlib.sha256((tmp_path / f"e{i}" / WEIGHTS).read_bytes()).hexdigest())
    assert len(digests) == 1
    state = load_file(str(tmp_path / "e0" / WEIGHTS))
    with safe_open(str(tmp_path / "e0" / WEIGHTS), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "tokenmill": "decoder"}
    assert state["tok_emb.weight"].dtype == torch.bfloat16 and "lm_head.weight" in state


def test_load_export_without_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_export(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_export(tmp_path / "empty")
    (tmp_path / "empty" / CONFIG).write_text("{}")
    with pytest.raises(FileNotFoundError):  # config without weights
        load_export(tmp_path / "empty")


# ---------------------------------------------------------------- optimizer


@pytest.mark.parametrize("tie", [True, False])
def test_param_groups_split_matrices_and_vectors(tie):
    model = make_model(9, tie_embeddings=tie)
    groups = param_groups(model, 0.1)
    decay, no_decay = groups[0], groups[1]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids = [id(p) for p in decay["params"]]
    no_decay_ids = [id(p) for p in no_decay["params"]]
    unique = {id(p): p for p in model.parameters()}
    assert len(decay_ids) == len(set(decay_ids)) and len(no_decay_ids) == len(set(no_decay_ids))
    assert set(decay_ids).isdisjoint(no_decay_ids)
    assert set(decay_ids) | set(no_decay_ids) == set(unique)
    assert set(decay_ids) == {i for i, p in unique.items() if p.ndim >= 2}
    norms = {id(p) for n, p in model.named_parameters() if n.endswith("norm.weight")}
    assert len(norms) == 2 * 2 + 1 and norms <= set(no_decay_ids)
    assert id(model.tok_emb.weight) in decay_ids and id(model.lm_head.weight) in decay_ids
    # 2 layers x (q, k, v, o, gate, up, down) + embedding (+ untied head)
    assert len(decay_ids) == 2 * 7 + 1 + (0 if tie else 1)
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(unique)


def test_lr_schedule_warmup_then_cosine():
    max_lr, warmup, total, ratio = 1e-3, 10, 100, 0.1
    lrs = [lr_at(s, max_lr, warmup, total, ratio) for s in range(131)]
    # linear warmup: (s + 1) / warmup of max_lr
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[4] == pytest.approx(5e-4)
    assert lrs[warmup - 1] == pytest.approx(max_lr)
    steps = [lrs[s + 1] - lrs[s] for s in range(warmup - 1)]
    assert all(d == pytest.approx(max_lr / warmup) for d in steps)
    assert max(lrs) == pytest.approx(max_lr)
    # cosine: max at the start, the mean of max and min halfway, min at total_steps and after
    assert lrs[warmup] == pytest.approx(max_lr)
    assert lrs[(warmup + total) // 2] == pytest.approx((max_lr + ratio * max_lr) / 2)
    assert lrs[total] == pytest.approx(ratio * max_lr)
    assert all(lr == pytest.approx(ratio * max_lr) for lr in lrs[total:])
    after = lrs[warmup - 1 :]
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert lrs[warmup + 1] < lrs[warmup]  # it does decrease


# ---------------------------------------------------------------- config


def test_config_validate_errors():
    with pytest.raises(ValueError, match=r"n_heads \(4\) must be a multiple of n_kv_heads \(3\)"):
        ModelConfig(vocab_size=10, d_model=32, n_heads=4, n_kv_heads=3).validate()
    with pytest.raises(ValueError, match="must be even"):
        ModelConfig(vocab_size=10, d_model=12, n_heads=4, n_kv_heads=4).validate()  # head dim 3
    with pytest.raises(ValueError, match="multiple of n_heads"):
        ModelConfig(vocab_size=10, d_model=30, n_heads=4, n_kv_heads=4).validate()
    with pytest.raises(ValueError, match="n_kv_heads"):
        Decoder(ModelConfig(vocab_size=10, d_model=32, n_heads=4, n_kv_heads=0))
    with pytest.raises(ValueError, match="vocab_size"):
        Decoder(ModelConfig(vocab_size=0, d_model=32, n_heads=4, n_kv_heads=4))
    ModelConfig(vocab_size=10, d_model=32, n_heads=4, n_kv_heads=2).validate()  # GQA is fine


def test_config_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match="n_embd"):
        ModelConfig.from_dict({"d_model": 32, "n_embd": 32})
    with pytest.raises(ValueError, match="n_kv_heads"):  # from_dict validates
        ModelConfig.from_dict({"d_model": 32, "n_heads": 4, "n_kv_heads": 3})
    cfg = tiny_cfg(tie_embeddings=False, rope_theta=500.0)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def load_preset(name: str, vocab: int) -> ModelConfig:
    data = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    return ModelConfig.from_dict({**data, "vocab_size": vocab})


def test_presets_load_and_have_their_advertised_sizes():
    tiny = load_preset("tiny", 2000)
    assert tiny.n_heads % tiny.n_kv_heads == 0
    assert param_counts(tiny)["total"] == sum(p.numel() for p in Decoder(tiny).parameters())

    gpt2 = load_preset("gpt2-124m", 50257)
    assert (gpt2.d_model, gpt2.n_layers, gpt2.n_heads, gpt2.n_kv_heads) == (768, 12, 12, 12)
    assert gpt2.tie_embeddings
    total = param_counts(gpt2)["total"]
    assert abs(total - 124e6) / 124e6 < 0.02
    # by hand: 12 x (4 x 768^2 + 3 x 768 x 2048 + 2 x 768) + 50257 x 768 + 768
    assert total == 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 50257 * 768 + 768

    llama = load_preset("llama-1b", 32000)
    assert llama.n_heads // llama.n_kv_heads == 4 and llama.head_dim == 64
    assert 1.0e9 <= param_counts(llama)["total"] <= 1.3e9
