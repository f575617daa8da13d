"""Policy artifacts: a model zip plus ``manifest.json``, verified on load.

The manifest records the contract's schema version and hash, the environment version,
the training config and seed, the git commit, evaluation scores and the sha256 of the
zip. Loading checks the zip's hash and the schema hash and raises :class:`ArtifactError`
naming both values on a mismatch — a policy is never fed features it was not trained on.

This module does not import the simulator: the online controller and the policy server
load artifacts through it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlctl.contract import SCHEMA_HASH, SCHEMA_VERSION, FeatureSpec, KnobBounds
from rlctl.errors import ArtifactError

MODEL_FILE = "model.zip"
MANIFEST_FILE = "manifest.json"


def default_artifact_dir() -> Path:
    """``policies/artifacts/default`` inside the installed package."""
    return Path(__file__).resolve().parent / "artifacts" / "default"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(cwd: Path | None = None) -> str:
    """The current commit, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd or Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@dataclass(frozen=True)
class Artifact:
    """A verified artifact on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def features(self) -> FeatureSpec:
        f = self.manifest.get("features", {})
        return FeatureSpec(slo_p99_ms=float(f.get("slo_p99_ms", 8.0)), window=int(f.get("window", 12)))

    @property
    def bounds(self) -> KnobBounds:
        b = dict(self.manifest.get("bounds", {}))
        if "allow" in b:
            b["allow"] = tuple(b["allow"])
        return KnobBounds(**b)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))


def save_artifact(
    out_dir: Path,
    model_zip: Path,
    *,
    name: str,
    env_version: str,
    config: dict[str, Any],
    seed: int,
    bounds: KnobBounds,
    features: FeatureSpec,
    scores: dict[str, Any] | None = None,
) -> Artifact:
    """Write ``model.zip`` and ``manifest.json`` into ``out_dir`` atomically (through a temp folder)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(model_zip, tmp / MODEL_FILE)
    bounds_dict = {f: getattr(bounds, f) for f in bounds.__dataclass_fields__}
    bounds_dict["allow"] = list(bounds.allow)
    manifest = {
        "name": name,
        "schema_version": SCHEMA_VERSION,
        "schema_hash": SCHEMA_HASH,
        "env_version": env_version,
        "config": config,
        "seed": seed,
        "git_commit": git_commit(),
        "features": {"slo_p99_ms": features.slo_p99_ms, "window": features.window},
        "bounds": bounds_dict,
        "scores": scores or {},
        "sha256": sha256_file(tmp / MODEL_FILE),
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return Artifact(out_dir, manifest)


def resolve(policy: str | Path) -> Path:
    """``default`` names the shipped policy; anything else is a folder path."""
    return (
        default_artifact_dir() if str(policy) in ("default", "ppo:default") else Path(str(policy).removeprefix("ppo:"))
    )


def load_artifact(policy: str | Path) -> Artifact:
    """Read and verify an artifact: the zip's sha256 and the contract's schema hash."""
    path = resolve(policy)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        hint = (
            "train one with `rlctl train --out policies/artifacts/default`"
            if str(policy) in ("default", "ppo:default")
            else "pass a folder holding manifest.json and model.zip"
        )
        raise ArtifactError(f"policy {policy!r}: no {MANIFEST_FILE} in {path}; {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    model = path / MODEL_FILE
    if not model.exists():
        raise ArtifactError(f"policy {policy!r}: {model} is missing; the artifact is incomplete")
    actual = sha256_file(model)
    if actual != manifest.get("sha256"):
        raise ArtifactError(
            f"{model}: sha256 {actual} does not match the manifest's {manifest.get('sha256')}; "
            "the model was changed or corrupted — retrain or restore it"
        )
    if manifest.get("schema_hash") != SCHEMA_HASH:
        raise ArtifactError(
            f"policy {policy!r} was trained against contract schema {manifest.get('schema_hash')} "
            f"(version {manifest.get('schema_version')}), this rlctl speaks {SCHEMA_HASH} (version {SCHEMA_VERSION}); "
            "retrain the policy with this version"
        )
    return Artifact(path, manifest)
