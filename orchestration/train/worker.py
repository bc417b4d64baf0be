"""The per-worker training loop that Ray Train runs on every rank (TorchTrainer's train_loop_per_worker).

The model is sharded by model/parallelize.py; a step is model/step.py; checkpoints are model/checkpoint.py's
DCP folders, which every rank writes into a local folder and reports: Ray Train merges the pieces into one
checkpoint folder in storage. A checkpoint holds the model and optimizer shards, the loader position, the
step and every rank's RNG state, so a resumed job continues the exact sequence of batches and updates. A
restore verifies every file's sha256: a corrupt or truncated checkpoint is reported with its path and the
job falls back to the one before it. A loss that is not finite stops the job at that step, without a checkpoint, so the
last good checkpoint stays the latest.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from model.config import ModelConfig
from model.data import TrainingData
from model.export import save_export
from model.flops import cpu_peak_flops, flops_per_token, gpu_peak_flops
from model.optim import build_optimizer, lr_at
from model.spikes import SpikeDetector
from model import checkpoint
from model.parallel_config import resolve_unit
from model.parallelize import build_sharded_model
from model.evaluate import Request, score_distributed
from model.mixture import MixtureData, shares_at, targets_through
from model.step import accumulate_fitting_memory, evaluate, val_tokens_and_bytes
from pipelines.evalsets import suite_metrics
from orchestration.config.train import TrainConfig
from orchestration.train.metrics import MetricsSink
from pipelines import storage
from pipelines.block_cache import cache_for
from pipelines.shard_reader import ShardSet
from pipelines.tokenizer import Tokenizer

_BOARD: list = [None]  # the driver's console.Board actor, when it gave one


def say(message: str, step: tuple[int, int, str] | None = None) -> None:
    """One line to this worker's log (the driver's terminal with --verbose) and to the driver's board: a step
    line updates its progress display, anything else is printed there. (sys.stdout, not print(): Ray Train
    patches print() into its logger, which the console then shows twice.)"""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()
    if _BOARD[0] is not None:
        if step is not None:
            _BOARD[0].step.remote(step[0], step[1], message, step[2])
        else:
            _BOARD[0].note.remote(message)


@dataclass
class WorkerJob:
    """What every rank receives (Ray Train's train_loop_config["job"]): the typed job config, the model config
    with the tokenizer's vocabulary, and where things are."""

    cfg: TrainConfig
    model: ModelConfig
    manifest: str  # the token shard manifest (the driver verified every byte)
    tokenizer: str
    tracking_uri: str
    run_id: str  # the job's MLflow run (rank 0 logs into it)
    storage_path: str  # Ray Train's storage (fault drills leave their markers there)
    export_dir: str
    resume_from: str | None = None  # the driver's choice on disk: a checkpoint Ray Train's record missed
    progress: Any = None  # the driver's console.Board actor
    sources: list = field(default_factory=list)  # [(name, manifest)]: a mixture's sources (data.sources)
    suite: Any = None  # the evaluation suite, tokenized by the driver (pipelines.evalsets.PreparedSuite)
    suite_seq_len: int = 0
    suite_batch: int = 8
    micro_batch: int | None = None  # the plan's (the largest that fits) when train.micro_batch_size is null


def train_loop(config: dict) -> dict:
    """TorchTrainer's train_loop_per_worker: one rank's whole job."""
    trainer = Trainer(config["job"])
    try:
        return trainer.train()
    except BaseException:
        if trainer.sink:  # what was logged before the failure reaches the store (best effort: it may be the cause)
            try:
                trainer.sink.flush()
            except Exception:  # noqa: BLE001
                pass
        raise


class Trainer:
    """One rank's training: set up in __init__ (data, sharded model, optimizer, the checkpoint to resume from),
    then `train()`, a loop of named steps (nanoGPT's and torchtitan's shape)."""

    def __init__(self, job: WorkerJob):
        self.job, cfg = job, job.cfg
        _BOARD[0] = job.progress
        self._stop_ref = None  # rank 0's question to the board not yet answered (stop_asked)
        torch.set_num_threads(cfg.train.threads_per_worker)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        precision = cfg.train.precision
        bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        # the driver verified every byte; each worker re-checks the manifest digest, sizes and tokenizer
        # remote shards: read by ranges through this rank's cache (one for every source of a mixture)
        self.cache = cache_for(job.manifest, cfg.data.remote_cache_mb, f"{cfg.name}-rank{self.rank}")
        self.shards = ShardSet(job.manifest, tokenizer_path=job.tokenizer, verify=False, cache=self.cache)
        self.data = TrainingData(self.shards, cfg.data.seq_len, cfg.data.seed, cfg.data.val_fraction,
                                 cfg.data.split_seed)
        if cfg.data.sources:  # a mixture: every source its own split and order, composed per batch
            others = [ShardSet(m, tokenizer_path=job.tokenizer, verify=False, cache=self.cache)
                      for _, m in job.sources[1:]]
            self.data = MixtureData([n for n, _ in job.sources], [self.data, *(
                TrainingData(ss, cfg.data.seq_len, cfg.data.seed, cfg.data.val_fraction, cfg.data.split_seed) for ss in others)],
                cfg.data.phases(), cfg.global_batch_seqs, cfg.data.seed)
        self.mesh = cfg.ray.mesh.shape(self.world)
        self.say_placement()
        self.model = build_sharded_model(job.model, self.device, self.mesh, bf16,
                                         cfg.train.compile and self.device.type == "cuda", cfg.train.seed,
                                         cfg.train.activation_checkpointing, cfg.train.ac_every,
                                         resolve_unit(cfg.train.fsdp_unit, self.device.type))
        o = cfg.optim
        self.optimizer = build_optimizer(self.model, o.lr, o.weight_decay, tuple(o.betas), o.eps,
                                         fused=self.device.type == "cuda")
        self.global_batch = cfg.global_batch_seqs
        self.micro = cfg.train.micro_batch_size or job.micro_batch or self.global_batch // self.world
        self.step_tokens = self.global_batch * cfg.data.seq_len
        self.fpt = flops_per_token(job.model, cfg.data.seq_len)
        self.step, self.last_loss, self.problems = 0, float("nan"), []
        self.timing: dict[str, float] = {}  # where the last step's time went (time.*_s metrics)
        self._token_bytes, self._val_bytes = None, {}  # bits per byte of the validation windows
        self.resume()
        self.sink = MetricsSink(job.tracking_uri, job.run_id, self.rank) if self.rank == 0 else None
        self.peak = self.peak_flops() if self.sink else None  # MFU is logged by rank 0 only: only it probes the CPU
        if self.sink:
            self.sink.log({"peak_flops_per_worker": self.peak or 0.0, "flops_per_token": self.fpt}, self.step)
            if self.problems:
                self.sink.note_fallback(self.problems)
        # what `tokenmill generate` needs to read a checkpoint without this job's config, and the lineage:
        # checkpoint -> MLflow run -> shard manifest
        self.about = {"model": job.model.to_dict(), "tokenizer": job.tokenizer,
                      "tokenizer_sha256": self.shards.tokenizer_sha256, "mlflow_run_id": job.run_id,
                      "manifest_digest": self.shards.manifest["digest"]}
        # loss spikes (model/spikes.py): judged on rank 0, logged as the metric loss_spike at their step; the
        # detector's window travels in checkpoints so a resumed job judges against the same history
        self.spikes = SpikeDetector(cfg.spikes, self.resumed.get("spikes")) if self.sink and cfg.spikes.enabled else None

    def say_placement(self) -> None:
        """Which node each row of the mesh (a shard group) is on: a row within one node keeps the reduce-scatter and
        all-gather off the network (Ray Train numbers a node's ranks consecutively; PACK placement fills nodes)."""
        replicate, shard = self.mesh
        if replicate == 1:
            return
        nodes: list = [None] * self.world  # Ray's node ids (Ray Train's node rank goes by IP: one for simulated nodes)
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id()[:8])
        if self.rank != 0:
            return
        rows = [sorted(set(nodes[r * shard:(r + 1) * shard])) for r in range(replicate)]
        spread = [i for i, row in enumerate(rows) if len(row) > 1]
        say(f"[train] mesh {replicate} x {shard}: " + "; ".join(
            f"row {i} (ranks {i * shard}-{(i + 1) * shard - 1}) on node{'s' * (len(row) > 1)} {', '.join(map(str, row))}"
            for i, row in enumerate(rows))
            + (f"; rows {', '.join(map(str, spread))} span nodes: their sharding collectives cross the network "
               "(give each node `shard` workers: ray.mesh.shard = workers per node)" if spread else ""))

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        steps = self.job.cfg.train.steps
        self.model.train()
        while self.step < steps:
            self.fault_drill_before_step()
            t0 = time.perf_counter()
            lr, grad_norm, stop_asked = self.train_step()
            if not math.isfinite(self.last_loss):  # the same on every rank (all-reduced): all stop together
                return self.stop_on_divergence()
            metrics = self.step_metrics(lr, grad_norm, time.perf_counter() - t0)
            t1 = time.perf_counter()
            self.maybe_eval(metrics)
            self.maybe_flag_spike(metrics)
            self.maybe_log(metrics)
            stop_here = self.step == self.job.cfg.train.stop_after
            self.maybe_checkpoint(metrics, force=stop_here or stop_asked)
            self.timing["between_steps"] = time.perf_counter() - t1  # logged with the next step
            self.fault_drill_kill()
            if stop_asked and self.step < steps:
                return self.stop_as_asked()
            if stop_here:
                break
        return self.finish()

    # ------------------------------------------------------------------ its steps

    def train_step(self) -> tuple[float, torch.Tensor, bool]:
        """One optimizer step over the global batch (this rank's share, in micro-batches); the loss and the
        driver's stop request all-reduced. Returns (lr, grad norm, stop asked)."""
        cfg = self.job.cfg
        o = cfg.optim
        lr = lr_at(self.step, o.lr, o.warmup_steps, cfg.train.steps, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t = time.perf_counter()
        x, y = self.data.rank_batch(self.global_batch, self.rank, self.world)
        self.data.prefetch(self.global_batch, self.rank, self.world, cfg.data.prefetch_steps)  # remote shards
        x, y = x.to(self.device), y.to(self.device)
        t = self.phase("data", t)

        def on_retry(new_micro: int) -> None:
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            say(f"[train] rank {self.rank}: out of memory at step {self.step + 1}; micro-batch -> {new_micro}")

        loss_sum, n_tok, self.micro = accumulate_fitting_memory(self.model, x, y, self.micro, on_retry)
        t = self.phase("forward_backward", t)  # FSDP's all-gathers and reduce-scatters included
        grad_norm = torch.tensor(0.0)
        if o.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t = self.phase("optimizer", t)  # the gradient norm's all-reduce included
        self.data.advance(self.global_batch)
        self.step += 1
        stats = torch.tensor([loss_sum, n_tok, self.stop_asked()], dtype=torch.float64, device=self.device)
        dist.all_reduce(stats)
        self.last_loss = float(stats[0] / stats[1])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.phase("sync", t)  # the stop request, the loss's all-reduce (and waiting for the slowest rank)
        return lr, grad_norm, bool(stats[2] > 0)

    def stop_asked(self) -> float:
        """1.0 once the driver got SIGTERM/SIGINT (rank 0 reads it from the board; the loss's all-reduce tells every
        rank). The question is asked without waiting: the answer to the one asked a step ago is read if it has come
        (not a blocking actor call in every step: the stop is seen a step or so later)."""
        if self.rank != 0 or _BOARD[0] is None:
            return 0.0
        if self._stop_ref is not None:
            ready, _ = ray.wait([self._stop_ref], timeout=0)
            if not ready:
                return 0.0
            if ray.get(self._stop_ref):
                return 1.0
        self._stop_ref = _BOARD[0].stop_requested.remote()
        return 0.0

    def phase(self, name: str, since: float) -> float:
        """Record a phase of the step (seconds, logged as time.<name>_s; on GPU as the host saw it, kernels may still
        run) and return now."""
        now = time.perf_counter()
        self.timing[name] = now - since
        return now

    def step_metrics(self, lr: float, grad_norm: torch.Tensor, dt: float) -> dict:
        tps = self.step_tokens / dt
        out = {"loss": self.last_loss, "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tps,
               "tokens_per_s_per_worker": tps / self.world, "step_time_s": dt, "micro_batch": self.micro,
               "mfu": (tps / self.world) * self.fpt / self.peak if self.peak else 0.0,
               **{f"time.{k}_s": v for k, v in self.timing.items()}}
        if isinstance(self.data, MixtureData):  # per source: tokens so far, its cumulative share and target, its plan
            total = max(int(self.data.positions.sum()), 1)
            target = targets_through(self.data.phases, self.global_batch, self.step) / total
            for n, k, t, planned in zip(self.data.names, self.data.positions.tolist(), target.tolist(),
                                        shares_at(self.data.phases, self.step)):
                out.update({f"mix.{n}.tokens": k * self.data.seq_len, f"mix.{n}.share": k / total,
                            f"mix.{n}.target": t, f"mix.{n}.planned": planned})
        if self.cache is not None:  # remote shards: rank 0's block cache (misses: the step fetched; waits: found it in flight)
            st = self.cache.stats
            out.update({"remote.cache_mb": self.cache.bytes / 2**20, "remote.cache_peak_mb": self.cache.peak_bytes / 2**20,
                        "remote.fetched_mb": st["fetched_bytes"] / 2**20, "remote.blocks_fetched": st["fetched"],
                        "remote.block_hits": st["hits"], "remote.block_misses": st["missed"],
                        "remote.block_waits": st["waited"]})
        return out

    def maybe_eval(self, metrics: dict) -> None:
        loop = self.job.cfg.train
        if self.step % loop.eval_every == 0 or self.step == loop.steps:
            if isinstance(self.data, MixtureData):  # every source its own hold-out; val_loss weighs them by share
                shares = shares_at(self.data.phases, self.step)
                vals = {n: evaluate(self.model, src, loop.eval_windows, self.micro, self.rank, self.world, self.device)
                        for n, src in zip(self.data.names, self.data.sources)}
                metrics.update({f"val_loss.{n}": v for n, v in vals.items() if v is not None})
                metrics.update({f"val_bpb.{n}": self.bits_per_byte(n, src, vals[n])
                                for n, src in zip(self.data.names, self.data.sources) if vals[n] is not None})
                weighted = [(v, w) for v, w in zip(vals.values(), shares) if v is not None and w > 0]
                if weighted:
                    metrics["val_loss"] = sum(v * w for v, w in weighted) / sum(w for _, w in weighted)
            else:
                val = evaluate(self.model, self.data, loop.eval_windows, self.micro, self.rank, self.world, self.device)
                if val is not None:
                    metrics["val_loss"] = val
                    metrics["val_bpb"] = self.bits_per_byte("", self.data, val)
        every = self.job.cfg.eval.every or loop.eval_every
        if self.job.suite is not None and (self.step % every == 0 or self.step == loop.steps):
            metrics.update(self.suite_metrics())

    def bits_per_byte(self, name: str, data, loss: float) -> float:
        """The validation loss of source `name` in bits per UTF-8 byte (its windows' bytes counted once)."""
        if name not in self._val_bytes:
            if self._token_bytes is None:
                self._token_bytes = Tokenizer(self.job.tokenizer).token_bytes()
            self._val_bytes[name] = val_tokens_and_bytes(data, self.job.cfg.train.eval_windows, self.world,
                                                         self._token_bytes)
        tokens, nbytes = self._val_bytes[name]
        return loss * tokens / (math.log(2) * nbytes) if nbytes else float("nan")

    def suite_metrics(self) -> dict:
        """The evaluation suite on every rank (each scores its share of the requests): eval.<set>.<metric>."""
        job = self.job
        self.model.eval()
        scores = score_distributed(self.model, [Request(*r) for r in job.suite.requests], job.suite_seq_len,
                                   job.suite_batch, self.rank, self.world, self.device)
        self.model.train()
        results = suite_metrics(job.suite, scores)
        out = {f"eval.{name}.{k}": float(v) for name, r in results.items() if name != "mean_bpb" for k, v in r.items()}
        return {**out, "eval.mean_bpb": results["mean_bpb"]}

    def maybe_flag_spike(self, metrics: dict) -> None:
        spike = self.spikes.observe(self.step, self.last_loss) if self.spikes else None
        if spike:
            metrics["loss_spike"], metrics["loss_spike_expected"] = self.last_loss, spike["expected"]
            say(f"[train] loss spike at step {self.step}: {self.last_loss:.4f} where the trend of the steps before "
                f"gives {spike['expected']:.4f} ({spike['sigmas']:.1f} robust sigmas above); "
                f"tokenmill lineage --spikes {self.job.run_id} lists its documents")

    def maybe_log(self, metrics: dict) -> None:
        loop, step = self.job.cfg.train, self.step
        if not self.sink or not (step % loop.log_every == 0 or step == loop.steps or step == 1
                                 or "val_loss" in metrics or "loss_spike" in metrics or "eval.mean_bpb" in metrics):
            return
        self.sink.log(metrics, step)
        val = f" val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
        val += f" eval {metrics['eval.mean_bpb']:.4f} bits/byte" if "eval.mean_bpb" in metrics else ""
        tps = metrics["tokens_per_s"]
        say(f"[train] step {step}/{loop.steps} loss {self.last_loss:.4f}{val} lr {metrics['lr']:.2e} "
            f"|g| {metrics['grad_norm']:.3f} {tps:,.0f} tok/s ({tps / self.world:,.0f}/worker) mfu {metrics['mfu']:.1%}",
            step=(step, loop.steps, f"step {step}/{loop.steps} · loss {self.last_loss:.3f}{val} · {tps:,.0f} tok/s"))

    def maybe_checkpoint(self, metrics: dict, force: bool) -> None:
        """Every rank writes its piece into a local folder and reports it: Ray Train merges the pieces into one
        checkpoint folder in the job's storage."""
        step = self.step
        if not (force or step % self.job.cfg.checkpoint.every == 0 or step == self.job.cfg.train.steps):
            return
        reported = {"step": step, "loss": self.last_loss, **({"val_loss": metrics["val_loss"]} if "val_loss" in metrics else {})}
        state = {"step": step, "loss": self.last_loss, "data": self.data.state_dict(), **self.about,
                 **({"spikes": self.spikes.state()} if self.spikes else {})} if self.rank == 0 else None
        if self.sink:  # the metrics up to the checkpoint are in the store before it is: a resume does not log
            self.sink.flush()  # the steps before its checkpoint again (MetricsSink.logged_through)
        with tempfile.TemporaryDirectory(prefix="tokenmill-ckpt-") as tmp:
            checkpoint.save(Path(tmp), self.model, self.optimizer, self.rank, state)
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"checkpoint_step{step:08d}")

    def resume(self) -> None:
        """From the newest checkpoint that verifies and loads on every rank: the one Ray Train hands over (after a
        worker failure in this fit) or the driver's newest on disk, going back through the job's older ones."""
        self.resumed: dict = {}
        given = ray.train.get_checkpoint()
        resume_from = self.job.resume_from
        if resume_from and (given is None or Path(given.path).name < Path(resume_from).name):
            given = ray.train.Checkpoint(resume_from)
        if given is None:
            return
        with given.as_directory() as local:
            folder = Path(given.path)
            older = sorted((p for p in folder.parent.glob("checkpoint_step*") if p.name < folder.name), reverse=True) \
                if folder.is_dir() else []  # a local or shared path: the job's older checkpoints are beside it (on
            # object storage only the one Ray Train hands over is tried)
            meta, self.problems = checkpoint.restore([(Path(local), str(folder)), *((p, str(p)) for p in older)],
                                                     self.model, self.optimizer, self.data, self.rank, self.world, say)
        self.resumed = meta
        self.step, self.last_loss = int(meta["step"]), float(meta.get("loss", "nan"))
        if self.rank == 0:
            where = (f"sample position {self.data.position}" if not isinstance(self.data, MixtureData) else
                     "sources at " + ", ".join(f"{n} {k:,}" for n, k in zip(self.data.names, self.data.positions.tolist()))
                     + " sequences; shares from here " + ", ".join(
                         f"{n} {w:.4g}" for n, w in zip(self.data.names, shares_at(self.data.phases, self.step + 1))))
            say(f"[train] resumed from {given.path} at step {self.step} ({where})"
                + ("; the job is complete" if self.step >= self.job.cfg.train.steps else ""))

    def peak_flops(self) -> float | None:
        loop = self.job.cfg.train
        if loop.peak_flops:
            return loop.peak_flops
        if self.device.type == "cuda":
            return gpu_peak_flops(torch.cuda.get_device_name(self.device))
        return cpu_peak_flops(loop.threads_per_worker)

    # ------------------------------------------------------------------ the fault drills (tests, game days)

    def fault_drill_before_step(self) -> None:
        fault = self.job.cfg.fault
        if self.rank != fault.kill_rank:
            return
        if fault.nan_at_step == self.step + 1:
            with torch.no_grad():  # one weight shard poisoned, as a diverging run would do itself
                next(self.model.parameters()).to_local().fill_(float("nan"))
        if fault.spike_at_step == self.step + 1:
            with torch.no_grad():  # one embedding shard drowned in noise, the loss jumps
                emb = next(self.model.parameters()).to_local()
                noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(self.step))
                emb.add_(noise.to(emb) * 3 * emb.std())

    def fault_drill_kill(self) -> None:
        fault = self.job.cfg.fault
        if fault.kill_at_step == self.step and self.rank == fault.kill_rank:
            marker = storage.path(self.job.storage_path) / f".fault_injected_step{self.step}"
            if not marker.exists():
                marker.write_text(f"rank {self.rank} killed itself after step {self.step}\n")
                say(f"[train] fault injection: rank {self.rank} kills its process after step {self.step}")
                os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ how it ends

    def _close(self) -> None:
        if self.sink:
            self.sink.close()
        if self.cache is not None:
            self.cache.close()
        dist.barrier()

    def stop_on_divergence(self) -> dict:
        if self.rank == 0:
            say(f"[train] loss is {self.last_loss} at step {self.step}: stopping without a checkpoint")
        self._close()
        return {"stopped": {"step": self.step, "loss": self.last_loss}, "step": self.step,
                "checkpoint_problems": self.problems}

    def stop_as_asked(self) -> dict:
        if self.rank == 0:
            say(f"[train] stopping at step {self.step} as asked: checkpoint_step{self.step:08d} saved")
        self._close()
        return {"interrupted": True, "step": self.step, "loss": self.last_loss, "checkpoint_problems": self.problems}

    def finish(self) -> dict:
        """The sharded model's logits on one window (for checking the export against: a collective forward), then
        the consolidated export: a full state dict gathered to CPU (collective), written by rank 0."""
        self.model.eval()
        with torch.no_grad():
            probe = getattr(self.data, "sources", [self.data])[0].train.windows(0, 1)[0]
            probe_logits = self.model(probe.to(self.device)).float().cpu()
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:
            save_export(self.job.export_dir, full, self.job.model, self.job.tokenizer,
                        extra={"step": self.step, "manifest_digest": self.shards.manifest["digest"],
                               "tokenizer_sha256": self.shards.tokenizer_sha256, "data": self.data.info})
        self._close()
        return {"step": self.step, "loss": self.last_loss, "data": self.data.info, "checkpoint_problems": self.problems,
                "probe_tokens": probe.numpy(), "probe_logits": probe_logits.numpy()}
