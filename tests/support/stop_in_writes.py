"""A process that keeps writing MLflow metrics to a SQLite store and is sent SIGINT or SIGTERM by a timer
thread, again and again (tests/test_stopping.py): after each stop it prints the run's status as the store has it
one JSON line per round.

    python tests/support/stop_in_writes.py STORE_DIR ROUNDS
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlflow  # noqa: E402

from orchestration.runtime import stopping, tracking  # noqa: E402


def main(store: Path, rounds: int) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("stops")
    stopping.install()
    rng = random.Random(0)
    for i in range(rounds):
        sig = rng.choice(stopping.SIGNALS)
        timer = threading.Timer(rng.uniform(0.05, 0.3), os.kill, (os.getpid(), sig))
        step = 0
        try:
            with tracking.run(run_name=f"round-{i}") as run:
                timer.start()
                while True:  # nearly all of this loop's time is inside SQLAlchemy and sqlite3
                    mlflow.log_metrics({"a": step, "b": 2.0 * step}, step=step)
                    step += 1
        except stopping.Interrupted as exc:
            ended = mlflow.MlflowClient().get_run(run.info.run_id)
            print(json.dumps({"round": i, "signal": exc.name, "steps": step, "status": ended.info.status,
                              "ended_tag": ended.data.tags.get(tracking.ENDED_TAG)}), flush=True)
        # ready for the next round: the module's state as a fresh command has it, the terminal back on fd 2
        if stopping._state["terminal_fd"] is not None:
            os.dup2(stopping._state["terminal_fd"], 2)
        stopping._state.update(signum=None, deferred=None, terminal_fd=None)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
