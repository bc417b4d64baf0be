"""`tokenmill lineage START --format openlineage`: the lineage as OpenLineage run events, for lineage backends
such as Marquez (send them with the client's transport, or POST each line to its /api/v1/lineage).

The events are made with the `openlineage-python` client's own classes, which check what the spec requires
(UUID run ids, ISO times), and serialised by its Serde. Per run of the lineage, producers first, a START event at
the run's start and a COMPLETE (FAIL, ABORT) event at its end, both naming the run's inputs and outputs:

- a run id is its MLflow run id (32 hex digits, i.e. a UUID); a stage run has a `parent` facet naming the
  pipeline run, so a backend groups a pipeline's stages under one job;
- datasets are files (namespace "file", name = absolute path; the spec's naming for local files), each with a
  `version` facet: the manifest or file digest MLflow recorded. A stage's output is the manifest its consumer
  read, so the backend joins runs on the same (namespace, name);
- raw input files are one input dataset each, with their sha256 as version and their size as input statistics;
- a training run's outputs are its latest checkpoint and its safetensors export.
"""

from __future__ import annotations

import uuid
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.generated.input_statistics_input_dataset import InputStatisticsInputDatasetFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.generated.parent_run import Job as ParentJob
from openlineage.client.generated.parent_run import ParentRunFacet
from openlineage.client.generated.parent_run import Run as ParentRun
from openlineage.client.generated.processing_engine_run import ProcessingEngineRunFacet
from openlineage.client.serde import Serde

NAMESPACE = "tokenmill"  # the job namespace: one per tool, as Airflow's and Spark's integrations do
PRODUCER = "https://github.com/tokenmill/tokenmill/tree/main/orchestration/lineage/openlineage.py"
END_STATE = {"FINISHED": RunState.COMPLETE, "FAILED": RunState.FAIL, "KILLED": RunState.ABORT}


def _uuid(run_id: str) -> str:
    return str(uuid.UUID(hex=run_id))


def _nodes(tree: dict) -> tuple[list[dict], dict[str, list[dict]]]:
    """Every run of the lineage once, producers before the runs that read them (stage runs are recorded
    together when a pipeline ends, so start times do not order them), and what each produced: the inputs
    of its consumers that name it."""
    nodes: list[dict] = []
    produced: dict[str, list[dict]] = {}
    seen: set[str] = set()

    def visit(node: dict) -> None:
        if node.get("see_above") or node["run_id"] in seen:
            return
        seen.add(node["run_id"])
        for inp in node["inputs"]:
            if "produced_by" in inp:
                out = produced.setdefault(inp["produced_by"]["run_id"], [])
                if all(o["source"] != inp["source"] for o in out):
                    out.append(inp)
                visit(inp["produced_by"])
        nodes.append(node)

    visit(tree["lineage"])
    return nodes, produced


def _dataset(cls, entry: dict, version: str | None, **extra) -> Any:
    facets = {"version": DatasetVersionDatasetFacet(datasetVersion=version)} if version else {}
    name = entry.get("source") or f"mlflow-dataset/{entry['name']}"
    return cls(namespace="file", name=name, facets=facets, **extra)


def _inputs(node: dict) -> list[InputDataset]:
    out = []
    for inp in node["inputs"]:
        if inp.get("files"):  # raw files: one dataset each, not the list that names them
            for f in inp["files"]:
                out.append(_dataset(InputDataset, {"source": f.get("location") or f["path"], "name": f["path"]},
                                    f["sha256"] or None,
                                    inputFacets={"inputStatistics": InputStatisticsInputDatasetFacet(
                                        size=f["bytes"], fileCount=1)}))
        else:
            out.append(_dataset(InputDataset, inp, inp["digest"]))
    return out


def _job(node: dict) -> Job:
    kind = (node["stage"] or node["kind"] or "run").upper()
    name = f"{node['parent_name']}.{node['stage']}" if node["stage"] and node.get("parent_name") else node["name"]
    return Job(namespace=NAMESPACE, name=name,
               facets={"jobType": JobTypeJobFacet(processingType="BATCH", integration="TOKENMILL", jobType=kind)})


def events(tree: dict) -> list[RunEvent]:
    """START and end events for every run in `tree` (lineage.build's), producers first."""
    nodes, produced = _nodes(tree)
    out = []
    for node in nodes:
        facets: dict[str, Any] = {"processing_engine": ProcessingEngineRunFacet(
            version=str(node["code_version"] or "unknown"), name="tokenmill")}
        if node.get("parent_run_id") and node.get("parent_name"):  # a stage run: its pipeline run
            facets["parent"] = ParentRunFacet(run=ParentRun(runId=_uuid(node["parent_run_id"])),
                                              job=ParentJob(namespace=NAMESPACE, name=node["parent_name"]))
        run, job = Run(runId=_uuid(node["run_id"]), facets=facets), _job(node)
        inputs = _inputs(node)
        outputs = [_dataset(OutputDataset, o, o["digest"]) for o in produced.get(node["run_id"], [])]
        outputs += [_dataset(OutputDataset, o, o.get("sha256")) for o in node.get("outputs", [])]
        out.append(RunEvent(eventType=RunState.START, eventTime=node["start_time"], run=run, job=job,
                            inputs=inputs, outputs=outputs, producer=PRODUCER))
        if node["status"] in END_STATE and node.get("end_time"):
            out.append(RunEvent(eventType=END_STATE[node["status"]], eventTime=node["end_time"], run=run, job=job,
                                inputs=inputs, outputs=outputs, producer=PRODUCER))
    return out


def to_json_lines(evts: list[RunEvent]) -> str:
    """One event per line (what `openlineage` file transports write and Marquez's API takes one by one)."""
    return "\n".join(Serde.to_json(e) for e in evts)
