"""A stage's output manifest: its files (path, kind, docs, bytes, sha256), counts and digest.

The digest is the sha256 of the manifest's canonical JSON (stage, params, counts, files with their
sha256), so it changes when the output bytes or what produced them change, and two stages that pass
the same bytes through still get different digests; it is what MLflow records as the output (and the
next stage's input) digest.
MLflow's dataset digest column holds 36 characters, so runs record `mlflow_digest` (its first 32 hex
characters, 128 bits) while the manifest keeps the full sha256.
"""

from __future__ import annotations

import json
from pipelines import storage
from pipelines.hashing import canonical_sha256, sha256_file
FORMAT_VERSION = 1


def manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return canonical_sha256(body)


def mlflow_digest(digest: str) -> str:
    return digest[:32]


def build_manifest(stage: str, files: list[dict], counts: dict, params: dict) -> dict:
    manifest = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "counts": counts,
        "params": params,
        "files": sorted(files, key=lambda f: f["path"]),
    }
    manifest["digest"] = manifest_digest(manifest)
    return manifest


def write_manifest(manifest: dict, path) -> None:
    storage.write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


class ShardIntegrityError(ValueError):
    """A token shard, its index, its manifest or the tokenizer does not match what was recorded."""


def load_manifest(path, kind: str = "stage") -> dict:
    """A stage's manifest (kind "stage") or a token shard manifest (kind "tokens", pipelines/token_shards.py),
    refused (ValueError; ShardIntegrityError for token manifests) when it does not parse, has another format or
    does not match its digest (edited or truncated)."""
    from pipelines import token_shards

    error = ShardIntegrityError if kind == "tokens" else ValueError
    path = storage.path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable {'token ' if kind == 'tokens' else ''}manifest ({exc})") from None
    if kind == "tokens":
        want, digest = (token_shards.KIND, token_shards.FORMAT_VERSION), token_shards.token_manifest_digest
        if (manifest.get("kind"), manifest.get("format_version")) != want:
            raise error(f"{path}: not a token shard manifest (kind {manifest.get('kind')!r}, format "
                        f"{manifest.get('format_version')!r}; expected {want[0]!r}, {want[1]})")
    else:
        digest = manifest_digest
        if manifest.get("format_version") != FORMAT_VERSION:
            raise error(f"{path}: manifest format {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    if digest(manifest) != manifest.get("digest"):
        raise error(f"{path}: manifest digest does not match its content (edited or truncated?)")
    return manifest


def verify_files(manifest: dict, root) -> None:
    """Raise naming the first file whose sha256 does not match the manifest."""
    for f in manifest["files"]:
        actual = sha256_file(storage.path(root) / f["path"])
        if actual != f["sha256"]:
            raise ValueError(f"{f['path']}: sha256 {actual[:12]}... does not match the manifest ({f['sha256'][:12]}...)")
