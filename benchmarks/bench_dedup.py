"""Dedup at scale: tokenmill's exact + MinHash stages against datatrove 0.10.1's 4-stage MinHash on the
same planted near-duplicate corpus, same machine and cores, in one run; then the distributed
connected-components step alone on synthetic graphs of 10^6, 10^7 (and 10^8) edges.

    .venv/bin/python benchmarks/bench_dedup.py [--mb 200] [--edges 1e6,1e7] [--partitions 16]

Corpus: benchmarks/corpus.py (planted exact copies and near copies with 2/5/10% of words replaced; a
copy's id names its original). Both systems: word 5-grams, 14 bands x 8 rows, every core; tokenmill
runs ingest -> exact dedup -> MinHash (no extraction, filters or tokenization), datatrove
signatures -> buckets -> cluster -> filter (with cluster ids saved, to score it the same way).

Scoring, the same for both: a planted copy is found when it ends in the same cluster as its original
(tokenmill: the survivor each removal names, followed to a kept document; datatrove: its cluster ids).
A removal is right when the removed document and the kept one of its cluster belong to the same planted
family (an original and its copies), wrong when they belong to different ones, and "natural" when
neither is planted (duplicates already in the base corpus, e.g. two editions of one book).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "support"))  # the scipy reference and the hard graphs

import corpus  # noqa: E402
from bench_pipeline import MINHASH, run_tokenmill  # noqa: E402


def tokenmill_config(corpus_dir: Path, partitions: int) -> dict:
    return {
        "name": "bench-dedup",
        "inputs": [{"name": "bench", "format": "jsonl", "paths": [str(Path(corpus_dir).resolve() / "part-*.jsonl.gz")], "id_field": "id"}],
        "output": {"format": "parquet", "shard_mb": 16},
        "ray": {"shuffle_partitions": partitions},
        "extract": {"enabled": False}, "filter": {"enabled": False},
        "exact_dedup": {"normalize": "whitespace"}, "minhash": MINHASH,
        "mlflow": {"experiment": "bench-dedup"},
    }


def jsonl_docs(folder: Path, pattern: str = "*.jsonl.gz"):
    for path in sorted(folder.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def corpus_texts(cdir: Path) -> dict[str, str]:
    return {doc["id"]: doc["text"] for doc in jsonl_docs(cdir, "part-*.jsonl.gz")}


def family_of(ids: list[str]) -> dict[str, str]:
    """id -> its planted family (the original's id), for copies and for originals that have copies."""
    fam = {}
    for i in ids:
        if i.startswith("copy/"):
            orig = i.split("/", 3)[3]
            fam[i] = fam[orig] = orig
    return fam


def shingles(text: str, n: int = 5) -> set[int]:
    words = text.lower().split()
    return {hash(tuple(words[i:i + n])) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / max(1, len(x | y))


def score(ids: list[str], root: dict[str, str], removed: set[str], texts: dict[str, str]) -> dict:
    """root: every removed document's kept representative."""
    fam = family_of(ids)
    found, planted = Counter(), Counter()
    for i in ids:
        if i.startswith("copy/"):
            kind, orig = i.split("/")[1], i.split("/", 3)[3]
            planted[kind] += 1
            found[kind] += root.get(i, i) == root.get(orig, orig)
    right = wrong = natural = 0
    for d in removed:
        a, b = fam.get(d), fam.get(root[d])
        if a is None and b is None:
            natural += 1
        elif a == b:
            right += 1
        else:
            wrong += 1
    # the measured truth: word 5-gram Jaccard of each removed document with the kept one of its cluster
    sims = [jaccard(texts[d], texts[root[d]]) for d in sorted(removed)]
    return {"removed": len(removed), "recall": {k: round(found[k] / planted[k], 4) for k in sorted(planted)},
            "found": dict(found), "planted": dict(planted), "same_family": right, "other_family": wrong,
            "unplanted": natural, "precision_j50": round(sum(j >= 0.5 for j in sims) / max(1, len(sims)), 4),
            "share_j_below_0.3": round(sum(j < 0.3 for j in sims) / max(1, len(sims)), 4),
            "mean_jaccard": round(sum(sims) / max(1, len(sims)), 4)}


def tokenmill_roots(work: Path, summary: dict) -> tuple[dict[str, str], set[str]]:
    import pyarrow.parquet as pq

    parent = {}
    for st in summary["stages"]:
        if st["stage"] not in ("exact_dedup", "minhash"):
            continue
        for f in json.loads(Path(st["manifest"]).read_text())["files"]:
            if f["kind"] == "dropped":
                t = pq.read_table(work / f["path"], columns=["id", "metadata"])
                for i, m in zip(t.column("id").to_pylist(), t.column("metadata").to_pylist()):
                    # tokenmill ids are INPUT#SOURCE_ID (id_field given): the corpus's ids are SOURCE_ID
                    parent[i.split("#", 1)[1]] = json.loads(m)["duplicate_of"].split("#", 1)[1]

    def root(i: str) -> str:
        while i in parent:
            i = parent[i]
        return i

    return {i: root(i) for i in parent}, set(parent)


def datatrove_clusters(dwork: Path) -> dict:
    def read(folder: Path) -> dict[str, int]:
        return {doc["id"]: int(doc.get("metadata", {}).get("minhash_cluster_id", -1)) for doc in jsonl_docs(folder)}

    return {"kept": read(dwork / "kept"), "removed": read(dwork / "removed")}


def datatrove_roots(dt: dict) -> tuple[dict[str, str], set[str]]:
    rep = {c: i for i, c in dt["kept"].items() if c >= 0}
    roots = {i: rep.get(c, i) for i, c in dt["removed"].items()}
    return roots, set(dt["removed"])


def dedup_comparison(args, root: Path, cores: int, previous: dict) -> dict:
    """Run both (unless --score-only: re-score the runs already in work/bench) and score them."""
    info = corpus.build(root / "corpus", args.mb)
    cdir = root / "corpus"
    print(f"corpus: {info['documents']} documents, {info['mb']} MB, planted {info['planted']}", flush=True)
    work, dwork = root / "dedup-tokenmill", root / "dedup-datatrove"
    out: dict = {"corpus": info}
    if args.score_only:
        out.update({k: previous[k] for k in ("tokenmill", "datatrove") if k in previous})
    else:
        shutil.rmtree(work, ignore_errors=True)
        cfg_path = root / "dedup-tokenmill.yaml"
        cfg_path.write_text(yaml.safe_dump(tokenmill_config(cdir, args.partitions)))
        tm = run_tokenmill(cdir, work, 0, 0, config_path=cfg_path)
        s = tm["summary"]
        out["tokenmill"] = {"wall": tm["wall"], "passes": s["passes"], "global_steps": s["global_steps"],
                            "stages": [{k: st[k] for k in ("stage", "docs_in", "kept", "dropped", "seconds")}
                                       for st in s["stages"]]}
        print(f"tokenmill: {tm['wall']:.1f}s", flush=True)
        if args.skip_datatrove and "datatrove" in previous:  # keep (and re-score) the last datatrove run
            out["datatrove"] = previous["datatrove"]
        elif not args.skip_datatrove:
            from datatrove_baseline import run_datatrove_minhash

            shutil.rmtree(dwork, ignore_errors=True)
            t0 = time.perf_counter()
            dt = run_datatrove_minhash(str(cdir), str(dwork), cores, MINHASH)
            out["datatrove"] = {"wall": time.perf_counter() - t0, "seconds": dt["seconds"]}
            print(f"datatrove: {out['datatrove']['wall']:.1f}s", flush=True)
    texts = corpus_texts(cdir)
    ids = sorted(texts)
    summary = json.loads((work / "summary.json").read_text())
    roots, removed = tokenmill_roots(work, summary)
    out["tokenmill"]["key_bytes"] = {st: sum(f.stat().st_size for f in (work / "keys" / st).rglob("*.parquet"))
                                     for st in ("exact_dedup", "minhash")}
    out["tokenmill"]["index_bytes"] = sum(f.stat().st_size for f in (work / "dedup" / "index").rglob("*.parquet"))
    out["tokenmill"]["score"] = score(ids, roots, removed, texts)
    print(f"tokenmill: {out['tokenmill']['score']}", flush=True)
    if "datatrove" in out and dwork.is_dir():
        droots, dremoved = datatrove_roots(datatrove_clusters(dwork))
        out["datatrove"]["score"] = score(ids, droots, dremoved, texts)
        both = removed & dremoved
        out["agreement"] = {"tokenmill": len(removed), "datatrove": len(dremoved), "both": len(both),
                            "jaccard": round(len(both) / max(1, len(removed | dremoved)), 4)}
        print(f"datatrove: {out['datatrove']['score']}", flush=True)
    return out


def components_alone(sizes: list[int], partitions: int) -> list[dict]:
    """Hard synthetic graphs (tests/support/reference.hard_graph: a long path, a giant star, many small
    components), scaled: path 1% of the edges, star 10%; against scipy in one process."""
    import numpy as np
    import ray

    from orchestration.corpus.components import star_components
    from orchestration.runtime.cluster import init_ray
    from pipelines.components import both_directions, route_rows
    from reference import hard_graph, reference_survivors

    init_ray()
    rows = []
    for n in sizes:
        e = hard_graph(seed=n, chain=max(1000, n // 100), star=n // 10, small_edges=int(n * 0.85))
        scipy_s = nodes = smallest = None
        if len(e) <= 3 * 10**7:  # scipy's graph needs ~50 B per edge more in this process
            t0 = time.perf_counter()
            nodes, smallest = reference_survivors(e)
            scipy_s = round(time.perf_counter() - t0, 1)
        producers = max(4, len(e) // 2_000_000)
        first = []
        for c in np.array_split(e, producers):
            both = both_directions(c)
            first.append([ray.put(p) for p in route_rows(both, partitions, senders=producers)])
        del c, both
        t0 = time.perf_counter()
        final, rounds = star_components(first, partitions)
        wall = time.perf_counter() - t0
        got = np.concatenate([r for refs in final for r in ray.get(refs)])
        got = np.unique(got[got[:, 0] > got[:, 1]], axis=0)
        if scipy_s is not None:
            dup = nodes != smallest
            ok = bool(np.array_equal(got[:, 0], nodes[dup]) and np.array_equal(got[:, 1], smallest[dup]))
        else:  # a certificate instead: every edge inside one labelled set, labels are their own smallest member
            nodes = np.unique(e)
            label = nodes.copy()
            label[np.searchsorted(nodes, got[:, 0])] = got[:, 1]
            la, lb = label[np.searchsorted(nodes, e[:, 0])], label[np.searchsorted(nodes, e[:, 1])]
            ok = bool((la == lb).all() and (label <= nodes).all()
                      and (label[np.searchsorted(nodes, label)] == label).all())
        rows.append({"edges": len(e), "nodes": len(nodes), "partitions": partitions, "rounds": len(rounds),
                     "seconds": round(wall, 1), "peak_task_rss_mb": max(r["peak_rss_mb"] for r in rounds),
                     "peak_task_heap_mb": max(r["peak_heap_mb"] for r in rounds),
                     "max_task_rows": max(r["max_task_rows"] for r in rounds),
                     "max_round_rows": max(r["rows"] for r in rounds), "scipy_one_process_s": scipy_s,
                     "same_as_scipy": ok if scipy_s is not None else None, "certificate_holds": ok})
        print(f"components: {rows[-1]}", flush=True)
        del first, final, got, e, nodes, smallest
    ray.shutdown()
    return rows


def table(r: dict) -> str:
    lines = []
    if "dedup" in r:
        d, cores = r["dedup"], r["cores"]
        mb = d["corpus"]["mb"]
        lines.append(f"\ndedup on {d['corpus']['documents']} documents, {mb} MB, {cores} cores; planted {d['corpus']['planted']}")
        head = f"{'system':10s} {'wall s':>8s} {'core-s/MB':>9s} {'speed':>6s} {'removed':>8s} {'P(J>=.5)':>8s} " \
               f"{'mean J':>6s} {'exact':>6s} {'2%':>6s} {'5%':>6s} {'10%':>6s}"
        lines += [head, "-" * len(head)]
        base = d.get("datatrove", {}).get("wall")
        for name in ("tokenmill", "datatrove"):
            if name not in d:
                continue
            x, sc = d[name], d[name]["score"]
            rec = sc["recall"]
            lines.append(f"{name:10s} {x['wall']:8.1f} {x['wall'] * cores / mb:9.2f} "
                         f"{(base / x['wall']) if base else float('nan'):5.2f}x {sc['removed']:8d} {sc['precision_j50']:8.4f} "
                         f"{sc['mean_jaccard']:6.3f} {rec.get('exact', 0):6.3f} {rec.get('near_0.02', 0):6.3f} "
                         f"{rec.get('near_0.05', 0):6.3f} {rec.get('near_0.10', 0):6.3f}")
        if "agreement" in d:
            a = d["agreement"]
            lines.append(f"removed sets: tokenmill {a['tokenmill']}, datatrove {a['datatrove']}, both {a['both']}, "
                         f"Jaccard {a['jaccard']}")
    if "components" in r:
        lines.append(f"\n{'edges':>12s} {'nodes':>12s} {'P':>4s} {'rounds':>6s} {'wall s':>8s} {'max task rows':>13s} "
                     f"{'task heap MB':>12s} {'task RSS MB':>11s} {'scipy 1-proc s':>14s} {'same':>5s}")
        for c in r["components"]:
            lines.append(f"{c['edges']:12,d} {c['nodes']:12,d} {c['partitions']:4d} {c['rounds']:6d} {c['seconds']:8.1f} "
                         f"{c.get('max_task_rows', 0):13,d} {c.get('peak_task_heap_mb', 0):12.0f} "
                         f"{c['peak_task_rss_mb']:11.0f} {c['scipy_one_process_s'] or float('nan'):14.1f} "
                         f"{str(c['same_as_scipy'] if c['same_as_scipy'] is not None else 'cert ' + str(c.get('certificate_holds'))):>5s}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--edges", default="1e6,1e7", help="comma-separated sizes for the components-alone run")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--components-only", action="store_true")
    ap.add_argument("--skip-components", action="store_true")
    ap.add_argument("--score-only", action="store_true", help="re-score the dedup runs already in work/bench")
    args = ap.parse_args()
    root = REPO / "work" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    out_path = REPO / "benchmarks" / "results" / "dedup.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.update({"cores": os.cpu_count() or 1, "args": vars(args)})
    if not args.components_only:
        results["dedup"] = dedup_comparison(args, root, results["cores"], results.get("dedup", {}))
    if not args.skip_components:
        new = components_alone([int(float(x)) for x in args.edges.split(",")], args.partitions)
        keep = [c for c in results.get("components", [])
                if (round(c["edges"], -5), c["partitions"]) not in {(round(n["edges"], -5), n["partitions"]) for n in new}]
        results["components"] = sorted(keep + new, key=lambda c: (c["edges"], c["partitions"]))
    out_path.write_text(json.dumps(results, indent=1, default=str).replace(str(REPO) + "/", ""))
    print(table(results))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
