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
from pathlib import Path

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
from model.spikes import SpikeDetector, SpikeRule
from model import checkpoint
from model.parallelize import build_sharded_model
from model.step import accumulate_fitting_memory, evaluate
from orchestration.train.metrics import MetricsSink
from pipelines import storage
from pipelines.shard_reader import ShardSet

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


def _save_checkpoint(model, optimizer, data: TrainingData, step: int, rank: int, metrics: dict, about: dict) -> None:
    """Every rank writes its piece into a local folder and reports it: Ray Train merges the pieces into one
    checkpoint folder in the job's storage."""
    state = {"step": step, "loss": metrics["loss"], "data": data.state_dict(), **about} if rank == 0 else None
    with tempfile.TemporaryDirectory(prefix="tokenmill-ckpt-") as tmp:
        checkpoint.save(Path(tmp), model, optimizer, rank, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_step{step:08d}")


def restore(given, model, optimizer, data: TrainingData, rank: int, world: int) -> tuple[dict, list[str]]:
    """(its trainer state, problems): the newest checkpoint that verifies and loads on every rank, starting
    from the one Ray Train hands over and going back through the job's older ones in storage."""
    with given.as_directory() as local:
        folder = Path(given.path)
        older = sorted((p for p in folder.parent.glob("checkpoint_step*") if p.name < folder.name), reverse=True) \
            if folder.is_dir() else []  # a local or shared path: the job's older checkpoints are beside it (on
        # object storage only the one Ray Train hands over is tried)
        return checkpoint.restore([(Path(local), str(folder)), *((p, str(p)) for p in older)], model, optimizer,
                                  data, rank, world, say)


def train_loop(config: dict) -> dict:
    job = config["job"]
    _BOARD[0] = config.get("progress")
    data_cfg, loop, optim_cfg = job["data"], job["train"], job["optim"]
    torch.set_num_threads(loop["threads_per_worker"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    bf16 = loop["precision"] == "bf16" or (loop["precision"] == "auto" and device.type == "cuda")

    # the driver verified every byte; each worker re-checks the manifest digest, sizes and tokenizer
    shards = ShardSet(data_cfg["manifest"], tokenizer_path=data_cfg["tokenizer"], verify=False)
    data = TrainingData(shards, data_cfg["seq_len"], data_cfg["seed"], data_cfg["val_fraction"])
    mcfg = ModelConfig.from_dict(config["model"])
    model = build_sharded_model(mcfg, device, world, bf16, loop["compile"] and device.type == "cuda", loop["seed"])
    optimizer = build_optimizer(model, optim_cfg["lr"], optim_cfg["weight_decay"], tuple(optim_cfg["betas"]),
                                optim_cfg["eps"], fused=device.type == "cuda")

    step, last_loss, problems, spike_state = 0, float("nan"), [], None
    given = ray.train.get_checkpoint()  # after a worker failure in this fit: the newest this fit reported
    resume_from = config.get("resume_from")  # the driver's choice on disk: a checkpoint Ray Train's record missed
    if resume_from and (given is None or Path(given.path).name < Path(resume_from).name):
        given = ray.train.Checkpoint(resume_from)
    if given is not None:
        meta, problems = restore(given, model, optimizer, data, rank, world)
        step, last_loss, spike_state = int(meta["step"]), float(meta.get("loss", "nan")), meta.get("spikes")
        if rank == 0:
            say(f"[train] resumed from {given.path} at step {step} (sample position {data.position})"
                + ("; the job is complete" if step >= loop["steps"] else ""))

    seq_len, total_steps = data_cfg["seq_len"], loop["steps"]
    global_batch = config["global_batch_seqs"]
    per_rank = global_batch // world
    micro = loop["micro_batch_size"] or per_rank
    step_tokens = global_batch * seq_len
    fpt = flops_per_token(mcfg, seq_len)
    sink = MetricsSink(config["mlflow"], rank) if rank == 0 else None  # logs each step once, also after a resume
    peak = None  # MFU is logged by rank 0 only: only it probes the CPU's matmul peak
    if sink:
        peak = loop["peak_flops"] or (gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda"
                                      else cpu_peak_flops(loop["threads_per_worker"]))
    if sink:
        sink.log({"peak_flops_per_worker": peak or 0.0, "flops_per_token": fpt}, step)
    fault = job["fault"]
    # what `tokenmill generate` needs to read a checkpoint without this job's config
    # and the lineage: checkpoint -> MLflow run -> shard manifest
    about = {"model": mcfg.to_dict(), "tokenizer": data_cfg["tokenizer"], "tokenizer_sha256": shards.tokenizer_sha256,
             "mlflow_run_id": config["mlflow"]["run_id"], "manifest_digest": shards.manifest["digest"]}
    # loss spikes (model/spikes.py): judged on rank 0, logged as the metric loss_spike at their step; the
    # detector's window travels in checkpoints so a resumed job judges against the same history
    spike_rule = SpikeRule(**job["spikes"])
    spikes = SpikeDetector(spike_rule, spike_state) if sink and spike_rule.enabled else None
    model.train()
    stopped = None
    while step < total_steps:
        t0 = time.perf_counter()
        if fault.get("nan_at_step") == step + 1 and rank == fault["kill_rank"]:
            with torch.no_grad():  # a drill: one weight shard poisoned, as a diverging run would do itself
                next(model.parameters()).to_local().fill_(float("nan"))
        if fault.get("spike_at_step") == step + 1 and rank == fault["kill_rank"]:
            with torch.no_grad():  # a drill: one embedding shard drowned in noise, the loss jumps
                emb = next(model.parameters()).to_local()
                emb.add_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(step)).to(emb) * 3 * emb.std())
        lr = lr_at(step, optim_cfg["lr"], optim_cfg["warmup_steps"], total_steps, optim_cfg["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = data.rank_batch(global_batch, rank, world)
        x, y = x.to(device), y.to(device)

        def on_retry(new_micro: int) -> None:
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            say(f"[train] rank {rank}: out of memory at step {step + 1}; micro-batch -> {new_micro}")

        loss_sum, n_tok, micro = accumulate_fitting_memory(model, x, y, micro, on_retry)
        grad_norm = torch.tensor(0.0)
        if optim_cfg["grad_clip"] > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg["grad_clip"])
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        data.advance(global_batch)
        step += 1
        # the driver got SIGTERM/SIGINT: rank 0 reads it from the board, the all-reduce tells every rank
        asked = 1.0 if rank == 0 and _BOARD[0] is not None and ray.get(_BOARD[0].stop_requested.remote()) else 0.0
        stats = torch.tensor([loss_sum, n_tok, asked], dtype=torch.float64, device=device)
        dist.all_reduce(stats)
        last_loss = float(stats[0] / stats[1])
        stop_asked = bool(stats[2] > 0)
        if not math.isfinite(last_loss):  # the same on every rank (all-reduced): all stop together
            stopped = {"step": step, "loss": last_loss}
            if rank == 0:
                say(f"[train] loss is {last_loss} at step {step}: stopping without a checkpoint")
            break
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tps = step_tokens / dt
        metrics = {"loss": last_loss, "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tps,
                   "tokens_per_s_per_worker": tps / world, "step_time_s": dt, "micro_batch": micro,
                   "mfu": (tps / world) * fpt / peak if peak else 0.0}
        if step % loop["eval_every"] == 0 or step == total_steps:
            val = evaluate(model, data, loop["eval_windows"], micro, rank, world, device)
            if val is not None:
                metrics["val_loss"] = val
        spike = spikes.observe(step, last_loss) if spikes else None
        if spike:
            metrics["loss_spike"], metrics["loss_spike_expected"] = last_loss, spike["expected"]
            say(f"[train] loss spike at step {step}: {last_loss:.4f} where the trend of the steps before gives "
                f"{spike['expected']:.4f} ({spike['sigmas']:.1f} robust sigmas above); "
                f"tokenmill lineage --spikes {config['mlflow']['run_id']} lists its documents")
        if sink and (step % loop["log_every"] == 0 or step == total_steps or step == 1 or "val_loss" in metrics
                     or spike):
            sink.log(metrics, step)
            val_part = f" val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
            say(f"[train] step {step}/{total_steps} loss {last_loss:.4f}{val_part} lr {lr:.2e} "
                  f"|g| {metrics['grad_norm']:.3f} {tps:,.0f} tok/s ({tps / world:,.0f}/worker) "
                  f"mfu {metrics['mfu']:.1%}",
                step=(step, total_steps, f"step {step}/{total_steps} · loss {last_loss:.3f}{val_part} · {tps:,.0f} tok/s"))
        stop_here = step == loop["stop_after"]
        if step % job["checkpoint"]["every"] == 0 or step == total_steps or stop_here or stop_asked:
            _save_checkpoint(model, optimizer, data, step, rank, {"step": step, "loss": last_loss, **(
                {"val_loss": metrics["val_loss"]} if "val_loss" in metrics else {})},
                about | ({"spikes": spikes.state()} if spikes else {}))
        if fault["kill_at_step"] == step and rank == fault["kill_rank"]:
            marker = storage.path(config["storage_path"]) / f".fault_injected_step{step}"
            if not marker.exists():
                marker.write_text(f"rank {rank} killed itself after step {step}\n")
                say(f"[train] fault injection: rank {rank} kills its process after step {step}")
                os.kill(os.getpid(), signal.SIGKILL)
        if stop_asked and step < total_steps:
            if rank == 0:
                say(f"[train] stopping at step {step} as asked: checkpoint_step{step:08d} saved")
            if sink:
                sink.close()
            dist.barrier()
            return {"interrupted": True, "step": step, "loss": last_loss, "checkpoint_problems": problems}
        if stop_here:
            break

    if stopped is not None:
        if sink:
            sink.close()
        dist.barrier()
        return {"stopped": stopped, "step": step, "checkpoint_problems": problems}

    # the sharded model's logits on one window, for checking the export against (a collective forward)
    model.eval()
    with torch.no_grad():
        probe = data.train.windows(0, 1)[0]
        probe_logits = model(probe.to(device)).float().cpu()
    # consolidated export: a full state dict gathered to CPU (collective), written by rank 0
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        save_export(config["export_dir"], full, mcfg, data_cfg["tokenizer"],
                    extra={"step": step, "manifest_digest": shards.manifest["digest"],
                           "tokenizer_sha256": shards.tokenizer_sha256, "data": data.info})
        if sink:
            sink.close()
    dist.barrier()
    return {"step": step, "loss": last_loss, "data": data.info, "checkpoint_problems": problems,
            "probe_tokens": probe.numpy(), "probe_logits": probe_logits.numpy()}
