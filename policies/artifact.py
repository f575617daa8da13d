"""Policy artifacts: a model zip plus ``manifest.json``, verified as a whole before anything is loaded.

A policy's manifest decides how it acts in production (its knob bounds, its feature window,
its SLO), so the manifest is as much a part of the policy as its weights. Format 2 therefore
covers the whole folder:

- ``files``: ``{relative path: sha256}`` of every file in the folder except the manifest
  itself. A file present but not listed, listed but absent, or with another hash is refused.
- ``artifact_digest``: the sha256 of the manifest without this field in canonical JSON
  (:func:`canonical_json`: sorted keys, ``(",", ":")`` separators, ASCII, no NaN). It covers
  ``files``, so one digest covers every byte that matters; pretty-printing and key order of
  the file on disk do not change it.

:func:`verify_artifact` is the one check, and :func:`load_artifact` (which every loader calls:
``rlctl eval``, ``rlctl control``, ``rlctl serve``, the Serve replica and its hot swap,
fine-tuning, the distributed trainer) runs it before returning. In order: the manifest is
strict JSON (finite numbers only), the digest matches, the files match, and the fields obey
the contract (:class:`Manifest`: schema hash and version equal this rlctl's, a known env
version, knob bounds inside the wire format with min <= max, a positive feature window, a
positive finite SLO, and the training config's copies of those agreeing), and ``model.zip``
is a zip holding stable-baselines3's members. :meth:`Artifact.load_model` turns anything
stable-baselines3 still cannot load into an :class:`ArtifactError` as well. Every refusal
is one line naming the file, the field or value, and the fix.

Why a digest and no signature: a digest detects corruption, partial copies, hand edits and
stale manifests — the failures seen in practice — and needs no key. It is not authenticity:
whoever can write the folder can recompute it. A signature (HMAC or ed25519 over
``artifact_digest``) would need its key on every loader, including each Ray Serve replica on
KubeRay, which is deployment work; the canonical digest is what such a signature would sign,
so adding one later is a field, not a format change.

Format 1 artifacts (only ``model.zip`` hashed) are refused; :func:`upgrade_artifact`
(``python -m policies.artifact upgrade DIR``) rewrites a trusted one's manifest to format 2
without retraining, after checking its zip against the old hash.

This module does not import the simulator: the online controller and the policy server
load artifacts through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlctl.contract import (
    ACTION_NVEC,
    ENV_VERSION,
    KNOB_FIELDS,
    N_FEATURES,
    SCHEMA_HASH,
    SCHEMA_VERSION,
    FeatureSpec,
    KnobBounds,
)
from rlctl.errors import ArtifactError

log = logging.getLogger(__name__)

MODEL_FILE = "model.zip"
MANIFEST_FILE = "manifest.json"

#: The manifest format this rlctl writes and verifies (1: only ``model.zip`` was hashed).
ARTIFACT_FORMAT = 2
DIGEST_FIELD = "artifact_digest"

#: Env versions a policy may have been trained in: the simulator's, and ``none`` for
#: policies that never saw it (:func:`rlctl.online.policy.placeholder_artifact`).
KNOWN_ENV_VERSIONS: tuple[str, ...] = (ENV_VERSION, "none")

#: Members every stable-baselines3 model zip has (``data`` is its JSON, ``policy.pth`` the weights).
SB3_MEMBERS: tuple[str, ...] = ("data", "policy.pth")

#: Longest feature window an artifact may declare (the ``POST /act`` limit, an hour and a half of 5 s samples).
MAX_FEATURE_WINDOW = 1024

FIX = "retrain with `rlctl train` or restore the artifact"

_SHA256 = r"^[0-9a-f]{64}$"
_BOUNDED = ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")


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


# ----------------------------------------------------------------------------- digest


def canonical_json(obj: Any) -> bytes:
    """The canonical form the digest is taken over: sorted keys, no whitespace, ASCII, finite numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``manifest`` without its own ``artifact_digest``."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != DIGEST_FIELD})).hexdigest()


def artifact_files(folder: Path) -> list[str]:
    """Every file under ``folder`` except the manifest, as sorted relative POSIX paths."""
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST_FILE
    )


def seal(manifest: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``manifest`` with ``artifact_format``, ``files`` (hashes of ``folder``'s files) and ``artifact_digest`` set."""
    out = {k: v for k, v in manifest.items() if k not in ("sha256", "files", DIGEST_FIELD)}
    out["artifact_format"] = ARTIFACT_FORMAT
    out["files"] = {rel: sha256_file(folder / rel) for rel in artifact_files(folder)}
    out[DIGEST_FIELD] = manifest_digest(out)
    return out


def strict_json(obj: Any) -> Any:
    """``obj`` as plain JSON values; NaN and infinities become ``None`` (strict JSON has neither)."""
    if isinstance(obj, Mapping):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- the contract


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


#: The largest value ``POST /act`` accepts per integer knob: the ``le`` bounds of the wire format
#: (:class:`rlctl.online.policy.KnobsModel`). Stated here, below the online path that serves it, so
#: the artifact's bounds check does not import upward; ``tests/test_layers.py`` keeps the two equal.
KNOB_WIRE_MAX: dict[str, int] = {
    "replicas": 100_000,
    "gomaxprocs": 1024,
    "gogc": 100_000,
    "gomemlimit_mib": 2**40,
    "object_pool_size": 1_000_000,
    "conn_pool_size": 10_000,
}


def _wire_limit(knob: str) -> int:
    """The largest value ``POST /act`` accepts for ``knob``."""
    return KNOB_WIRE_MAX[knob]


class BoundsModel(_Strict):
    """:class:`rlctl.contract.KnobBounds` as stored: integers inside the wire format, each min <= its max."""

    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    min_gomaxprocs: int = Field(ge=1)
    max_gomaxprocs: int = Field(ge=1)
    min_gogc: int = Field(ge=-1)
    max_gogc: int = Field(ge=-1)
    min_gomemlimit_mib: int = Field(ge=0)
    max_gomemlimit_mib: int = Field(ge=0)
    min_object_pool_size: int = Field(ge=0)
    max_object_pool_size: int = Field(ge=0)
    min_conn_pool_size: int = Field(ge=0)
    max_conn_pool_size: int = Field(ge=0)
    allow: list[str]

    @field_validator("allow")
    @classmethod
    def _known_knobs(cls, allow: list[str]) -> list[str]:
        unknown = sorted(set(allow) - set(KNOB_FIELDS))
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; choose from {list(KNOB_FIELDS)}")
        return allow

    @model_validator(mode="after")
    def _ordered_and_inside_the_wire_format(self) -> BoundsModel:
        for knob in _BOUNDED:
            lo, hi, limit = getattr(self, f"min_{knob}"), getattr(self, f"max_{knob}"), _wire_limit(knob)
            if lo > hi:
                raise ValueError(f"min_{knob}={lo} is above max_{knob}={hi}")
            if hi > limit:
                raise ValueError(f"max_{knob}={hi} is above {limit}, the most a service accepts")
        return self

    def knob_bounds(self) -> KnobBounds:
        return KnobBounds(**{**self.model_dump(), "allow": tuple(self.allow)})


class FeaturesModel(_Strict):
    """:class:`rlctl.contract.FeatureSpec` as stored: a positive finite SLO, a positive window."""

    slo_p99_ms: float = Field(gt=0, allow_inf_nan=False)
    window: int = Field(ge=1, le=MAX_FEATURE_WINDOW)


class Manifest(_Strict):
    """A format-2 manifest, validated against this rlctl's contract before anything is loaded."""

    artifact_format: Literal[2]
    name: str = Field(min_length=1)
    schema_version: str
    schema_hash: str
    env_version: str
    config: dict[str, Any]
    seed: int
    git_commit: str
    features: FeaturesModel
    bounds: BoundsModel
    scores: dict[str, Any]
    files: dict[str, str]
    artifact_digest: str = Field(pattern=_SHA256)

    @field_validator("schema_hash")
    @classmethod
    def _this_schema(cls, value: str) -> str:
        if value != SCHEMA_HASH:
            raise ValueError(f"trained against contract schema {value}, this rlctl speaks {SCHEMA_HASH}")
        return value

    @field_validator("schema_version")
    @classmethod
    def _this_version(cls, value: str) -> str:
        if value != SCHEMA_VERSION:
            raise ValueError(f"contract version {value!r} with this schema hash; this rlctl is {SCHEMA_VERSION!r}")
        return value

    @field_validator("env_version")
    @classmethod
    def _known_env(cls, value: str) -> str:
        if value not in KNOWN_ENV_VERSIONS:
            raise ValueError(f"unknown env version; this rlctl knows {list(KNOWN_ENV_VERSIONS)}")
        return value

    @field_validator("files")
    @classmethod
    def _model_and_hashes(cls, files: dict[str, str]) -> dict[str, str]:
        if MODEL_FILE not in files:
            raise ValueError(f"does not list {MODEL_FILE}")
        bad = sorted(k for k, v in files.items() if len(v) != 64 or not all(c in "0123456789abcdef" for c in v))
        if bad:
            raise ValueError(f"entries {bad} are not sha256 hex digests")
        return files

    @model_validator(mode="after")
    def _config_agrees(self) -> Manifest:
        """The training config's copies of the bounds and features must be the ones the policy acts with."""
        env = self.config.get("env")
        if not isinstance(env, dict):
            return self
        mine = {
            "window": self.features.window,
            "slo_p99_ms": self.features.slo_p99_ms,
            "bounds": self.bounds.model_dump(),
        }
        for key, value in mine.items():
            if key in env and env[key] != value:
                raise ValueError(f"config.env.{key} = {env[key]!r} disagrees with the manifest's {key} {value!r}")
        return self


def _describe(exc: ValidationError) -> str:
    """pydantic's errors as ``field = value: reason`` clauses, at most three."""
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {json.dumps(value)[:80]}"
        reason = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"field {field}{shown}: {reason}" if field else reason)  # a cross-field check names its fields
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def read_manifest(manifest_path: Path) -> dict[str, Any]:
    """The manifest as strict JSON: an object whose numbers are all finite."""
    try:
        data = json.loads(manifest_path.read_text(), parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc.msg} at line {exc.lineno}); {FIX}") from None
    except UnicodeDecodeError:
        raise ArtifactError(f"{manifest_path}: not UTF-8 text; {FIX}") from None
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path}: {exc}; a manifest is strict JSON; {FIX}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{manifest_path}: a manifest is a JSON object, not {type(data).__name__}; {FIX}")
    return data


def check_model_zip(model: Path) -> None:
    """``model`` is a readable zip with stable-baselines3's members (no CRC errors)."""
    try:
        with zipfile.ZipFile(model) as zf:
            missing = [m for m in SB3_MEMBERS if m not in zf.namelist()]
            broken = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArtifactError(
            f"{model}: not a readable zip archive ({exc}); a stable-baselines3 model is one; {FIX}"
        ) from None
    if missing:
        raise ArtifactError(
            f"{model}: zip lacks the stable-baselines3 member(s) {missing}; it is not a PPO model; {FIX}"
        )
    if broken is not None:
        raise ArtifactError(f"{model}: member {broken!r} fails its CRC check; {FIX}")


def verify_artifact(path: Path, policy: str | Path | None = None) -> Manifest:
    """The one integrity and contract check of an artifact folder; returns its validated manifest.

    Called by :func:`load_artifact` (so by every loader) before any file is unpickled.
    Raises :class:`ArtifactError` naming the file, the field or value, and the fix.
    """
    label = policy if policy is not None else str(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        hint = (
            "train one with `rlctl train --out policies/artifacts/default`"
            if str(policy) in ("default", "ppo:default")
            else "pass a folder holding manifest.json and model.zip"
        )
        raise ArtifactError(f"policy {label!r}: no {MANIFEST_FILE} in {path}; {hint}")
    manifest = read_manifest(manifest_path)
    stored = manifest.get(DIGEST_FIELD)
    if stored is None:
        if "sha256" in manifest:
            raise ArtifactError(
                f"{manifest_path}: artifact format 1 (only {MODEL_FILE} hashed, no {DIGEST_FIELD}); this rlctl "
                f"verifies format {ARTIFACT_FORMAT}, the whole folder; {FIX}, or upgrade a copy you trust with "
                f"`python -m policies.artifact upgrade {path}`"
            )
        raise ArtifactError(f"{manifest_path}: no {DIGEST_FIELD}; the manifest is incomplete; {FIX}")
    actual = manifest_digest(manifest)
    if stored != actual:
        raise ArtifactError(
            f"{manifest_path}: {DIGEST_FIELD} {stored} does not match the manifest's content (sha256 {actual}); "
            f"the manifest was edited or corrupted after it was written; {FIX}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"{manifest_path}: field files must map relative paths to sha256 digests; {FIX}")
    present = artifact_files(path)
    unlisted = [f for f in present if f not in files]
    if unlisted:
        raise ArtifactError(
            f"{path / unlisted[0]}: not listed in the manifest's files; an artifact holds only the files it lists "
            f"({len(unlisted)} unlisted); remove it, or {FIX}"
        )
    missing = [f for f in files if f not in present]
    if missing:
        raise ArtifactError(
            f"{path / missing[0]}: listed in {manifest_path} but missing; the artifact is incomplete; {FIX}"
        )
    for rel, expected in sorted(files.items()):
        got = sha256_file(path / rel)
        if got != expected:
            raise ArtifactError(
                f"{path / rel}: sha256 {got} does not match the manifest's files[{rel!r}] {expected}; "
                f"the file was changed or corrupted; {FIX}"
            )
    try:
        checked = Manifest.model_validate(manifest)
    except ValidationError as exc:
        raise ArtifactError(f"{manifest_path}: {_describe(exc)}; {FIX}") from None
    check_model_zip(path / MODEL_FILE)
    return checked


# ----------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """A verified artifact on disk: ``manifest`` is the raw dict, ``spec`` the validated one."""

    path: Path
    manifest: dict[str, Any]
    spec: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(slo_p99_ms=self.spec.features.slo_p99_ms, window=self.spec.features.window)

    @property
    def bounds(self) -> KnobBounds:
        return self.spec.bounds.knob_bounds()

    @property
    def name(self) -> str:
        return self.spec.name

    def load_model(self, device: str = "cpu") -> Any:
        """The stable-baselines3 PPO model; anything it cannot load is an :class:`ArtifactError`, never a traceback.

        Its spaces must be the contract's, so a model of another shape is refused here, not at
        the first decision.
        """
        from stable_baselines3 import PPO  # local: SB3 and torch are the serve/train extras, heavy

        try:
            model = PPO.load(self.model_path, device=device)
        except Exception as exc:  # whatever SB3 raises on a bad zip, the user gets one line
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ArtifactError(
                f"{self.model_path}: stable-baselines3 cannot load it ({type(exc).__name__}: {first}); {FIX}"
            ) from exc
        obs_shape = tuple(getattr(model.observation_space, "shape", ()) or ())
        nvec = [int(n) for n in np.asarray(getattr(model.action_space, "nvec", []))]
        if obs_shape != (N_FEATURES,) or nvec != list(ACTION_NVEC):
            raise ArtifactError(
                f"{self.model_path}: the model takes observations {obs_shape} and actions {nvec}; the contract has "
                f"({N_FEATURES},) and {list(ACTION_NVEC)}; {FIX}"
            )
        return model


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
    """Write ``model.zip`` and a sealed format-2 ``manifest.json`` into ``out_dir`` atomically (through a temp folder).

    The manifest is verified exactly as a loader will verify it before the folder is moved
    into place, so a trainer never writes an artifact it could not load.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(model_zip, tmp / MODEL_FILE)
    bounds_dict: dict[str, Any] = {f: getattr(bounds, f) for f in bounds.__dataclass_fields__}
    bounds_dict["allow"] = list(bounds.allow)
    manifest = {
        "name": name,
        "schema_version": SCHEMA_VERSION,
        "schema_hash": SCHEMA_HASH,
        "env_version": env_version,
        "config": strict_json(config),
        "seed": seed,
        "git_commit": git_commit(),
        "features": {"slo_p99_ms": float(features.slo_p99_ms), "window": features.window},
        "bounds": bounds_dict,
        "scores": strict_json(scores or {}),
    }
    _write_manifest(tmp, seal(manifest, tmp))
    spec = verify_artifact(tmp, out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return Artifact(out_dir, read_manifest(out_dir / MANIFEST_FILE), spec)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Pretty JSON on disk (the digest is over the canonical form, so layout does not matter), replaced atomically."""
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(folder / MANIFEST_FILE)


def upgrade_artifact(path: str | Path) -> Artifact:
    """Rewrite a trusted format-1 artifact's manifest as format 2, without retraining; returns it verified.

    Format 1 hashed only ``model.zip``; that hash must still match, and the folder must
    hold nothing but the zip and the manifest, so only an intact artifact is upgraded. The
    zip is not touched.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST_FILE
    old = read_manifest(manifest_path) if manifest_path.is_file() else {}
    if DIGEST_FIELD in old:
        return load_artifact(folder)
    if "sha256" not in old:
        raise ArtifactError(f"{manifest_path}: not a format-1 manifest (no sha256 of {MODEL_FILE}); {FIX}")
    actual = sha256_file(folder / MODEL_FILE) if (folder / MODEL_FILE).is_file() else "missing"
    if actual != old["sha256"]:
        raise ArtifactError(
            f"{folder / MODEL_FILE}: sha256 {actual} does not match the format-1 manifest's {old['sha256']}; "
            f"not upgrading a changed artifact; {FIX}"
        )
    extra = [f for f in artifact_files(folder) if f != MODEL_FILE]
    if extra:
        raise ArtifactError(f"{folder / extra[0]}: a format-1 artifact holds only {MODEL_FILE}; remove it first")
    sealed = seal(old, folder)
    try:
        Manifest.model_validate(sealed)
    except ValidationError as exc:
        raise ArtifactError(f"{manifest_path}: {_describe(exc)}; {FIX}") from None
    _write_manifest(folder, sealed)
    log.info("upgraded %s to artifact format %d (%s %s)", folder, ARTIFACT_FORMAT, DIGEST_FIELD, sealed[DIGEST_FIELD])
    return load_artifact(folder)


def resolve(policy: str | Path) -> Path:
    """``default`` names the shipped policy; anything else is a folder path."""
    return (
        default_artifact_dir() if str(policy) in ("default", "ppo:default") else Path(str(policy).removeprefix("ppo:"))
    )


def load_artifact(policy: str | Path) -> Artifact:
    """Read and verify an artifact as a whole (:func:`verify_artifact`); every loader comes through here."""
    path = resolve(policy)
    spec = verify_artifact(path, policy)
    return Artifact(path, read_manifest(path / MANIFEST_FILE), spec)


def main(argv: list[str] | None = None) -> int:
    """``python -m policies.artifact {verify,upgrade} DIR...``: check artifacts, or upgrade trusted format-1 ones."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(args) < 2 or args[0] not in ("verify", "upgrade"):
        log.error("usage: python -m policies.artifact {verify,upgrade} DIR...")
        return 2
    try:
        for folder in args[1:]:
            artifact = upgrade_artifact(folder) if args[0] == "upgrade" else load_artifact(folder)
            log.info("%s: ok (%s %s)", artifact.path, DIGEST_FIELD, artifact.spec.artifact_digest)
    except ArtifactError as exc:
        log.error("ArtifactError: %s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
