"""A training job's plan before launch: parameters, FLOPs, per-device memory by kind, the largest micro-batch that
fits, tokens and time. Pure arithmetic on the model's shape (no torch, no devices): `tokenmill train CONFIG --plan`
prints it, and every training run prints it first and refuses a job that cannot fit.

Memory of one device (bytes), for P parameters sharded over S ranks (the mesh's shard dimension; replicas hold
the same), micro-batch b sequences of s tokens, d_model h, kv width k (n_kv_heads x head_dim), FFN width f,
n_heads a, vocabulary V, L blocks:

- parameters 4P/S: FSDP2 keeps fp32 master shards, also under bf16 (MixedPrecisionPolicy casts for compute);
- gradients 4P/S: sharded, fp32 (bf16 runs reduce in fp32);
- optimizer 8P/S: AdamW's two fp32 moments;
- working set: the parameters FSDP all-gathers for compute, in the compute dtype: with block units (GPU), the
  root's (embedding, final norm) for the whole step and the last block's, kept gathered from its forward into its
  backward; with one unit (CPU), all of them (model/parallelize.py);
- activations: what autograd saves for the backward, per token of a block (derived op by op from
  model/layers.py, see `block_activation_bytes`); a checkpointed block saves only its input (h values), and
  recomputes its activations once during the backward (one block's worth, transient);
- the loss: logits and their log-softmax in fp32, then its gradient: 12 bytes per token and vocabulary entry at
  the start of the backward.

The peak is the largest of the moments of a step (`memory()["moments"]`): the start of the backward (every
block's activations and the loss's tensors alive: the peak of long sequences), the end of the backward (the
tied embedding's gradient: three of the embedding's size), the optimizer step (AdamW's temporaries), and with
one unit over several ranks the end of the forward (its all-gather buffer still alive) and the reduce-scatter
of the whole model's gradients.

It is checked against a tensor-level count on CPU (torch.distributed._tools MemTracker: every storage alive, no
allocator cache) for the tiny and 124M presets on one and two ranks, both units, fp32 and bf16, with and without
checkpointing (tests/test_plan.py, benchmarks/bench_memory.py): within 0.5%, except a single 64-token sequence
of the tiny model over two ranks (0.93-0.97: one block's all-gather and reduce-scatter in flight are a tenth of
its memory there), and against torchtitan's published Llama 3.1 8B figures (docs/training.md). On a GPU the
caching allocator reserves more than is allocated (fragmentation, 5-15%): `fits` keeps `headroom` of the device
free for it, CUDA's context and NCCL's buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from model.config import ModelConfig
from model.flops import flops_per_token, param_counts
from model.parallel_config import checkpointed_blocks

GiB = 2**30


def parse_bytes(text: str) -> int:
    """'80GB', '80GiB', '141 GB', '512MiB', '17179869184' -> bytes (GB and GiB both read as 2**30: device memory
    is sold in GiB and called GB)."""
    t = str(text).strip().upper().replace(" ", "")
    for suffix, mult in (("TIB", 2**40), ("TB", 2**40), ("GIB", GiB), ("GB", GiB), ("MIB", 2**20), ("MB", 2**20),
                         ("KIB", 2**10), ("KB", 2**10), ("B", 1)):
        if t.endswith(suffix):
            t, m = t[: -len(suffix)], mult
            break
    else:
        m = 1
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not an amount of memory: {text!r} (e.g. 80GB, 512MiB)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not an amount of memory: {text!r} (must be > 0)")
    return int(value * m)


def block_params(cfg: ModelConfig) -> int:
    return param_counts(cfg)["blocks"] // cfg.n_layers


def block_activation_bytes(cfg: ModelConfig, bf16: bool) -> int:
    """Bytes autograd keeps per token of one block until the backward reaches it (model/layers.py, op by op;
    a product with a constant, such as RoPE's cos and sin, keeps only the constant).

    fp32: each RMSNorm keeps its input, its normalized value and its output (3h); attention keeps q and k after
    RoPE and v (h + 2k), the attention output and its (b, s, h) copy for o_proj (2h), the softmax's log-sum-exp
    (a per token); SwiGLU keeps gate, silu(gate), up and their product (4f): 36h + 8k + 16f + 4a bytes.
    bf16: each RMSNorm keeps an fp32 copy of its input and the bf16 normalized value and output (8h bytes),
    attention bf16 q, k, v, output and copy (6h + 4k), the fp32 log-sum-exp, SwiGLU four bf16 tensors (8f):
    22h + 4k + 8f + 4a bytes. Measured by tensor on CPU: within 0.5% (tests/test_plan.py)."""
    h, k, f, a = cfg.d_model, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim, cfg.n_heads
    return 22 * h + 4 * k + 8 * f + 4 * a if bf16 else 36 * h + 8 * k + 16 * f + 4 * a


MOMENTS = {"forward_end": "end of the forward", "backward": "start of the backward",
           "backward_end": "end of the backward", "reduce_scatter": "gradients' reduce-scatter",
           "optimizer": "optimizer step"}


def memory(cfg: ModelConfig, seq_len: int, micro: int, shard: int, bf16: bool, ac: str = "none",
           ac_every: int = 2, accumulating: bool = False, unit: str = "block") -> dict:
    """Bytes of one device by kind (the module docstring says how each is counted), what each moment of a step
    holds (`moments`), and `total`: the largest, named by `peak_at`. `accumulating`: an earlier micro-batch of
    the step left its gradients. `unit`: FSDP's unit, each block or the whole model (model/parallelize.py)."""
    counts = param_counts(cfg)
    p, pb, emb = counts["total"], block_params(cfg), counts["embedding"]
    root = counts["total"] - counts["blocks"]  # embedding (tied head counted once), final norm, untied head
    ce = 2 if bf16 else 4  # compute dtype of parameters and activations
    tokens = micro * seq_len
    act = block_activation_bytes(cfg, bf16) * tokens
    n_ckpt = len(checkpointed_blocks(cfg.n_layers, ac, ac_every))
    one_unit = unit == "model"
    out = {
        "parameters": 4 * p // shard,
        "gradients": 4 * p // shard,
        "optimizer": 8 * p // shard,
        # the parameters all-gathered for compute: the root's for the whole step and the last block's from its forward
        # into its backward, or with one unit, all of them
        "working": ce * (p if one_unit else root + pb),
        "activations": (cfg.n_layers - n_ckpt) * act + n_ckpt * tokens * cfg.d_model * ce,
        # the final norm's tensors, the logits' log-softmax and its gradient (fp32), at the start of the backward
        "loss": tokens * (12 * cfg.vocab_size + (8 if bf16 else 12) * cfg.d_model),
        "recompute": act if n_ckpt else 0,  # a checkpointed block's activations, rebuilt in the backward
    }
    state = out["parameters"] + out["optimizer"]
    held = out["gradients"] if accumulating else 0
    moments = {
        "backward": state + out["working"] + out["activations"] + max(out["loss"], out["recompute"]) + held,
        # the embedding's gradient, last of the backward: with a tied head, the head's gradient, the lookup's and
        # their sum (3 of the embedding's size); the blocks' gradients already reduce-scattered (block units: with
        # the root's gathered parameters or, bf16, their fp32 gradient's copy for the reduction) or still whole
        "backward_end": state + 3 * ce * emb
                        + (out["working"] + ce * (p - root) if one_unit
                           else max(out["working"], 4 * root) + 4 * (p - root) // shard)
                        + (out["gradients"] if accumulating and one_unit else 0),
        "optimizer": state + out["gradients"] + 4 * p // shard,  # AdamW's temporaries: one more fp32 shard
    }
    if one_unit and shard > 1:
        # one unit's all-gather buffer (the whole model in the compute dtype) lives until the loss is computed: the
        # logits and their log-softmax (fp32: 8 bytes per token and vocabulary entry; bf16: 10, the logits in both)
        moments["forward_end"] = (state + 2 * out["working"] + out["activations"]
                                  + tokens * cfg.vocab_size * (10 if bf16 else 8) + held)
        # the whole model's gradients reduce-scattered at once: the gathered parameters, the gradients, their fp32
        # copy for the reduction (bf16 runs) and its sharded output
        moments["reduce_scatter"] = state + 2 * out["working"] + (4 * p if bf16 else 0) + 4 * p // shard + held
    out["moments"] = moments
    out["peak_at"] = max(moments, key=moments.get)
    out["total"] = moments[out["peak_at"]]
    return out


def usable(device_memory: int | None, headroom: float) -> int | None:
    """The bytes a plan may fill of a device's memory (None: no device memory known)."""
    return int(device_memory * (1 - headroom)) if device_memory else None


def divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


@dataclass
class Plan:
    """What `plan()` computed; `lines()` is what the user reads."""
    model: ModelConfig
    seq_len: int
    world: int
    mesh: tuple[int, int]
    bf16: bool
    ac: str
    ac_every: int
    micro: int  # the micro-batch planned: the configured one, else the largest that fits (else the rank's share)
    share: int  # sequences per rank per step
    memory: dict
    params: dict[str, int]
    flops_per_token: float
    step_tokens: int
    steps: int
    device_memory: int | None
    headroom: float
    largest_fitting_micro: int | None  # None: even one sequence does not fit (or no device memory given)
    peak_flops: float | None
    mfu: float
    notes: list[str] = field(default_factory=list)
    # a plan that does not fit stops the job (False where the device memory is an estimate: a CPU job's share of
    # this machine's memory, which swap and overcommit stretch)
    binding: bool = True
    unit: str = "block"  # FSDP's unit (model/parallelize.py)

    @property
    def budget(self) -> int | None:
        return usable(self.device_memory, self.headroom)

    @property
    def fits(self) -> bool:
        return self.budget is None or self.memory["total"] <= self.budget

    @property
    def total_tokens(self) -> int:
        return self.step_tokens * self.steps

    @property
    def seconds(self) -> float | None:
        if not self.peak_flops:
            return None
        return self.total_tokens * self.flops_per_token * self.recompute_factor / (self.world * self.peak_flops * self.mfu)

    @property
    def recompute_factor(self) -> float:
        """Hardware FLOPs over model FLOPs: a checkpointed block runs its forward (a third of its training FLOPs)
        twice; the embedding and the output projection are not recomputed (counted as blocks: an upper bound)."""
        return 1 + len(checkpointed_blocks(self.model.n_layers, self.ac, self.ac_every)) / self.model.n_layers / 3

    def as_dict(self) -> dict:
        return {"params": self.params, "flops_per_token": self.flops_per_token, "mesh": list(self.mesh),
                "precision": "bf16" if self.bf16 else "fp32", "activation_checkpointing": self.ac, "fsdp_unit": self.unit,
                "ac_every": self.ac_every, "micro_batch": self.micro, "sequences_per_rank": self.share,
                "memory_bytes": self.memory, "device_memory": self.device_memory, "fits": self.fits,
                "largest_fitting_micro_batch": self.largest_fitting_micro, "step_tokens": self.step_tokens,
                "steps": self.steps, "total_tokens": self.total_tokens, "peak_flops": self.peak_flops, "mfu": self.mfu,
                "expected_seconds": self.seconds}

    def lines(self) -> list[str]:
        p = self.params
        r, s = self.mesh
        mem = self.memory
        gib = lambda b: f"{b / GiB:.2f} GiB" if b >= GiB else f"{b / 2**20:.1f} MiB"  # noqa: E731
        out = [
            f"model: {p['total'] / 1e6:,.1f}M parameters ({p['non_embedding'] / 1e6:,.1f}M outside the embedding), "
            f"{self.flops_per_token / 1e9:.3g} GFLOP per token (forward + backward, seq {self.seq_len})",
            f"mesh: {r} x {s} ({'FSDP over' if r == 1 else f'HSDP: {r} replicas, each sharded over'} {s} "
            f"rank{'s' if s > 1 else ''}, FSDP unit: {'each block' if self.unit == 'block' else 'the whole model'}); "
            f"{'bf16 compute, fp32 master weights' if self.bf16 else 'fp32'}; "
            f"activation checkpointing {self.ac}" + (f" (every {self.ac_every} blocks, the last of each "
                                                       f"{self.ac_every})" if self.ac == "selective" else ""),
            f"per device, micro-batch {self.micro} x {self.seq_len}: parameters {gib(mem['parameters'])}, gradients "
            f"{gib(mem['gradients'])}, optimizer {gib(mem['optimizer'])}, gathered for compute {gib(mem['working'])}, "
            f"activations {gib(mem['activations'])}, loss {gib(mem['loss'])}"
            + (f", recomputed {gib(mem['recompute'])}" if mem["recompute"] else "")
            + f": peak {gib(mem['total'])} (at the {MOMENTS[mem['peak_at']]})",
        ]
        if self.device_memory:
            verdict = "fits" if self.fits else "DOES NOT FIT" if self.binding else "does not fit (expect swapping)"
            fit = (f"the largest micro-batch that fits is {self.largest_fitting_micro}" if self.largest_fitting_micro
                   else "not even a micro-batch of 1 fits: shard over more ranks, checkpoint activations, or a "
                        "shorter sequence")
            out.append(f"device memory {gib(self.device_memory)} ({self.headroom:.0%} kept free for the allocator, "
                       f"CUDA and NCCL): {verdict}; {fit}")
        out.append(f"tokens: {self.step_tokens:,} per step x {self.steps:,} steps = {self.total_tokens:,}")
        if self.seconds is not None:
            h = self.seconds / 3600
            out.append(f"expected time at {self.mfu:.0%} MFU of {self.peak_flops / 1e12:,.1f} TFLOP/s per device on "
                       f"{self.world} device{'s' if self.world > 1 else ''}: {h:,.2f} h"
                       + (f" (with the recompute of checkpointed blocks: x{self.recompute_factor:.2f} the model's FLOPs)"
                          if self.recompute_factor > 1 else ""))
        out += self.notes
        return out


def plan(cfg: ModelConfig, seq_len: int, global_batch_tokens: int, steps: int, world: int, mesh: tuple[int, int],
         bf16: bool, ac: str = "none", ac_every: int = 2, micro: int | None = None, device_memory: int | None = None,
         headroom: float = 0.1, peak_flops: float | None = None, mfu: float = 0.4, unit: str = "block") -> Plan:
    share = global_batch_tokens // seq_len // world
    shard = mesh[1]
    budget = usable(device_memory, headroom)
    largest = None
    if budget is not None:
        largest = next((m for m in divisors_desc(max(share, 1))
                        if memory(cfg, seq_len, m, shard, bf16, ac, ac_every, m < share, unit)["total"] <= budget), None)
    # the configured micro-batch; else the largest that fits; else (nothing fits) one sequence, whose memory the plan
    # shows; else (no device memory to fit) the rank's whole share
    chosen = micro or largest or (1 if budget is not None else share)
    return Plan(cfg, seq_len, world, mesh, bf16, ac, ac_every, chosen, share,
                memory(cfg, seq_len, chosen, shard, bf16, ac, ac_every, chosen < share, unit), param_counts(cfg),
                flops_per_token(cfg, seq_len), global_batch_tokens, steps, device_memory, headroom, largest, peak_flops,
                mfu, unit=unit)
