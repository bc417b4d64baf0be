"""What a training worker records: per-step metrics into the job's MLflow run."""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric

FALLBACK_TAG = "tokenmill.checkpoint_fallback"  # the checkpoints a resume found unusable, and why


class MetricsSink:
    """Rank 0 logs its step metrics straight into the job's MLflow run (the driver opened it), and samples
    its node's system metrics (CPU, memory, GPU) into the same run."""

    PENDING = 64

    def __init__(self, tracking_uri: str, run_id: str, rank: int):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.pending: list = []  # the asynchronous log_batch calls not yet waited for
        self.run_id = run_id
        # a resumed job (a re-run, or Ray Train's restart after a worker died) trains again the steps after its
        # checkpoint that an earlier attempt logged: the same batches give the same values, and MLflow would keep
        # both points. Those steps are not logged again: one point per step.
        self.logged_through = max((m.step for m in self.client.get_metric_history(run_id, "loss")), default=0)
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=5, samples_before_logging=1,
                                                resume_logging=True, node_id=f"rank{rank}", tracking_uri=tracking_uri)
            self.monitor.start()
        except Exception as exc:  # psutil missing or the store refuses: training goes on without them
            print(f"[train] system metrics off: {exc}", flush=True)
            self.monitor = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.logged_through:
            return
        now = int(time.time() * 1000)
        # asynchronous: a SQLite or server write (10-30 ms) would hold up rank 0, and every rank with it at the next
        # collective; at most PENDING writes are in flight (an error surfaces within that many logs, or at close)
        self.pending.append(self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()], synchronous=False))
        if len(self.pending) > self.PENDING:
            self.pending.pop(0).wait()

    def note_fallback(self, problems: list[str]) -> None:
        """Record unusable checkpoints as soon as a resume skips them (appended: a worker restart later in the
        same job must not erase what an earlier attempt found)."""
        old = self.client.get_run(self.run_id).data.tags.get(FALLBACK_TAG)
        self.client.set_tag(self.run_id, FALLBACK_TAG, "; ".join([*([old] if old else []), *problems])[:5000])

    def flush(self) -> None:
        """Wait for every asynchronous write; the first failure is raised after all were waited for."""
        failed = None
        while self.pending:
            try:
                self.pending.pop(0).wait()
            except Exception as exc:  # noqa: BLE001 -- raised below, once every write has been waited for
                failed = failed or exc
        if failed is not None:
            raise failed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._stop_monitor()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
