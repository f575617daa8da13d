"""The learned policy as the control loop and the policy server see it.

- :class:`ActRequest` / :class:`ActResponse`: the ``POST /act`` body and answer (pydantic,
  validated at the edge; the server answers 422 with the reason on bad input).
- :class:`PolicyModel`: a verified artifact (the whole folder against its digest and the
  manifest against the contract, via :mod:`policies.artifact`) that decides for many services
  in one ``predict`` call. The Ray Serve deployment and the in-process policy both use it,
  so they cannot disagree.
- :class:`InProcessPolicy` and :class:`HttpPolicy`: what the control loop calls; both raise
  :class:`PolicyUnavailable` (with a ``cause``) when no decision came back in time.
- :func:`placeholder_artifact`: an untrained policy of the shipped architecture, for
  benchmarks and drills when no trained policy exists (it never needs the simulator).
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.artifact import save_artifact
from policies.ppo import PPOController, action_probabilities, decode
from policies.residual import residual_target, rule_span, window_replicas
from rlctl.contract import (
    ACTION_NVEC,
    COL,
    FEATURE_HIGH,
    FEATURE_LOW,
    KNOB_FIELDS,
    N_FEATURES,
    N_TELEMETRY,
    NOOP_ACTION,
    SCHEMA_HASH,
    TELEMETRY_FIELDS,
    FeatureSpec,
    KnobBounds,
    Knobs,
    apply_array,
    featurize,
)
from rlctl.errors import ConfigError, RlctlError

FloatArray = npt.NDArray[np.float64]

#: Length of the decoder's accumulator (the policy's delta dimensions; see :mod:`policies.ppo`).
CARRY_LEN = 6

#: Longest window a request may carry (an hour of 5 s samples is 720).
MAX_WINDOW = 1024


class PolicyUnavailable(RlctlError):
    """No policy decision came back: ``cause`` is ``policy-timeout`` or ``policy-error``."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


# ----------------------------------------------------------------------------- wire format


class KnobsModel(BaseModel):
    """The knobs in effect now, by contract name (:class:`rlctl.contract.Knobs`)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=100_000)
    gomaxprocs: int = Field(ge=0, le=1024)
    gogc: int = Field(ge=-1, le=100_000)
    gomemlimit_mib: int = Field(ge=0, le=2**40)
    object_pool_size: int = Field(ge=0, le=1_000_000)
    conn_pool_size: int = Field(ge=0, le=10_000)
    prefetch: bool
    turbo: bool

    def to_array(self) -> FloatArray:
        return np.array([float(getattr(self, f)) for f in KNOB_FIELDS], dtype=np.float64)


class ActRequest(BaseModel):
    """``POST /act``: one service's telemetry window (oldest first) and its knobs.

    ``window`` is either rows of ``len(TELEMETRY_FIELDS)`` numbers in contract column order
    (``null`` for a missing value) or sample objects keyed by contract field name (missing
    fields are NaN, unknown fields an error).
    """

    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, max_length=253)
    window: list[list[float | None]] | list[dict[str, float | str | None]] = Field(min_length=1, max_length=MAX_WINDOW)
    knobs: KnobsModel
    capacity_qps: float | None = Field(default=None, gt=0.0, le=1e7, allow_inf_nan=False)
    """Requests/s one replica of this service serves within 90 % of the SLO (``rlctl probe``):
    required by a residual policy (one trained with ``residual: true``), ignored by others."""
    carry: list[float] | None = Field(default=None, min_length=CARRY_LEN, max_length=CARRY_LEN)
    """The decoder's error-feedback accumulator from this service's previous answer (``None``:
    zeros, a fresh start). The server keeps no state per service: the caller carries it."""

    @field_validator("carry")
    @classmethod
    def _check_carry(cls, carry: list[float] | None) -> list[float] | None:
        if carry is not None and not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in carry):
            raise ValueError(f"carry {carry} must be {CARRY_LEN} numbers in [-1, 1]: send back the last answer's carry")
        return carry

    @field_validator("window")
    @classmethod
    def _check_window(cls, rows: list[Any]) -> list[Any]:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                unknown = set(row) - set(TELEMETRY_FIELDS) - {"service"}
                if unknown:
                    raise ValueError(
                        f"window sample {i} has unknown field(s) {sorted(unknown)}; use TELEMETRY_FIELDS names"
                    )
                bad = [k for k, v in row.items() if k != "service" and isinstance(v, str)]
                if bad:
                    raise ValueError(f"window sample {i}: field(s) {bad} must be numbers or null")
            elif len(row) != N_TELEMETRY:
                raise ValueError(
                    f"window row {i} has {len(row)} values, expected {N_TELEMETRY} in TELEMETRY_FIELDS order "
                    f"({TELEMETRY_FIELDS[0]}, {TELEMETRY_FIELDS[1]}, ...)"
                )
        return rows

    def window_array(self) -> FloatArray:
        """The window as a ``(W, F)`` float64 array; missing values are NaN."""
        out = np.full((len(self.window), N_TELEMETRY), np.nan)
        for i, row in enumerate(self.window):
            if isinstance(row, dict):
                for j, name in enumerate(TELEMETRY_FIELDS):
                    v = row.get(name)
                    if v is not None:
                        out[i, j] = float(v)
            else:
                out[i] = [np.nan if v is None else v for v in row]
        return out


class ActManyRequest(BaseModel):
    """``POST /act/many``: many services in one request (a controller of many services sends this)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[ActRequest] = Field(min_length=1, max_length=4096)


class ActResponse(BaseModel):
    """The answer to ``POST /act``."""

    service: str
    action: list[int]
    target_knobs: dict[str, int | bool]
    policy: str
    schema_hash: str
    feature_hash: str
    carry: list[float] = Field(default_factory=list)
    """Send this back as the next request's ``carry`` (the decoder's accumulator)."""


class ActManyResponse(BaseModel):
    responses: list[ActResponse]


def window_payload(window: npt.ArrayLike) -> list[list[float | None]]:
    """Rows for :class:`ActRequest` in strict JSON (non-finite values become null)."""
    arr = np.asarray(window, dtype=np.float64)
    return [[float(v) if math.isfinite(v) else None for v in row] for row in arr]


def knobs_dict(row: npt.ArrayLike) -> dict[str, int | bool]:
    """A knob row as the ``Knobs`` dict (non-finite entries become the contract defaults)."""
    v = np.asarray(row, dtype=np.float64)
    default = Knobs().to_array()
    return Knobs.from_array(np.where(np.isfinite(v), v, default)).to_dict()


def feature_hash(obs: npt.ArrayLike) -> str:
    """First 16 hex digits of the sha256 of one float32 feature vector: what the policy saw."""
    return hashlib.sha256(np.ascontiguousarray(obs, dtype=np.float32).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """What a policy answered for one service."""

    action: list[int]
    target_knobs: FloatArray
    policy: str
    schema_hash: str
    feature_hash: str
    carry: list[float] | None = None
    """The decoder's accumulator after this decision (the next request's ``carry``)."""

    def response(self, service: str) -> ActResponse:
        return ActResponse(
            service=service,
            action=self.action,
            target_knobs=knobs_dict(self.target_knobs),
            policy=self.policy,
            schema_hash=self.schema_hash,
            feature_hash=self.feature_hash,
            carry=list(self.carry or []),
        )


# ----------------------------------------------------------------------------- the model


class PolicyModel:
    """A verified policy artifact that decides for many services per call.

    :param policy: ``default`` or an artifact folder (``manifest.json`` + ``model.zip``);
        loading verifies the artifact as a whole (:func:`policies.artifact.verify_artifact`:
        every file's hash, the manifest's digest, its fields against the contract) and raises
        :class:`~rlctl.errors.ArtifactError` naming the field or file before anything is loaded.
    :param torch_threads: threads for inference. One keeps a serving replica from fighting
        other processes for cores; a batch of 64 is still well under a millisecond.
    """

    def __init__(self, policy: str | Path = "default", *, device: str = "cpu", torch_threads: int = 1) -> None:
        import torch  # local: torch is the serve extra, heavy

        torch.set_num_threads(torch_threads)
        self.policy_ref = str(policy)
        self.controller = PPOController(policy, device=device)
        self.artifact = self.controller.artifact
        self.name = self.controller.name
        self.bounds: KnobBounds = self.artifact.bounds
        self.slo_p99_ms = self.controller.slo_p99_ms
        #: Samples the policy's features read (the newest of each window).
        self.feature_window = self.artifact.features.window
        #: The capacity rule a residual policy acts over (None: the policy steps the replicas itself).
        self.rule = self.controller.rule.config if self.controller.rule is not None else None
        trained = self.artifact.manifest.get("config") or {}
        self.interval_s = float((trained.get("env") or {}).get("dt_s", 5.0))
        span = rule_span(self.rule, self.interval_s) if self.rule is not None else 0
        #: Samples a request should carry: the features', or the rule's look-back if longer.
        self.window = max(self.feature_window, span)

    def featurize(self, windows: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float32]:
        """Feature vectors of many ``(W_i, F)`` windows (one featurize call per window length)."""
        arrays = [np.asarray(w, dtype=np.float64)[-self.feature_window :] for w in windows]
        lengths = {a.shape[0] for a in arrays}
        if len(lengths) == 1:
            return featurize(np.stack(arrays), slo_p99_ms=self.slo_p99_ms)
        return np.concatenate([featurize(a[None], slo_p99_ms=self.slo_p99_ms) for a in arrays])

    def decide(
        self,
        windows: Sequence[npt.ArrayLike],
        knobs: npt.ArrayLike,
        carries: Sequence[Sequence[float] | None] | None = None,
        capacities: Sequence[float | None] | None = None,
    ) -> list[Decision]:
        """One decision per service: featurize, decode, apply within the artifact's bounds.

        Decoding is the controller's (:mod:`policies.ppo`): expected deltas with error
        feedback, each service's accumulator passed in ``carries`` and returned in its
        :class:`Decision` (SB3's per-dimension mode would keep every knob for ever).
        """
        obs = self.featurize(windows)
        acc = np.zeros((len(obs), CARRY_LEN))
        for i, c in enumerate(carries or []):
            if c is not None:
                acc[i] = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
        probs = action_probabilities(self.controller.model, obs)
        actions, acc = decode(probs, acc)
        knob_rows = np.asarray(knobs, dtype=np.float64).reshape(len(obs), -1)
        if self.rule is None:
            targets = apply_array(knob_rows, actions, self.bounds)
        else:
            targets = self._residual(windows, knob_rows, actions, probs[0], capacities)
        return [
            Decision(
                [int(a) for a in actions[i]], targets[i], self.name, SCHEMA_HASH, feature_hash(obs[i]), acc[i].tolist()
            )
            for i in range(len(obs))
        ]

    def _residual(
        self,
        windows: Sequence[npt.ArrayLike],
        knob_rows: FloatArray,
        actions: npt.NDArray[np.int64],
        replica_probs: FloatArray,
        capacities: Sequence[float | None] | None,
    ) -> FloatArray:
        """Targets of a residual policy: the rule's replicas (from each window's last
        :attr:`window` samples) plus the rounded expected offset; the other knobs stepped."""
        assert self.rule is not None
        caps = list(capacities or [])
        if len(caps) != len(windows) or any(c is None or not (math.isfinite(c) and c > 0) for c in caps):
            raise PolicyUnavailable(
                "policy-error",
                f"{self.name} is a residual policy over the capacity rule and needs each service's capacity_qps "
                "(requests/s one replica serves within 90 % of the SLO; measure it with rlctl probe and pass "
                "rlctl control --capacity-qps)",
            )
        span = rule_span(self.rule, self.interval_s)
        loads = np.zeros((len(windows), 1, N_TELEMETRY))
        for i, w in enumerate(windows):
            arr = np.asarray(w, dtype=np.float64)[-span:]
            loads[i, 0, COL["offered_qps"]] = np.nan_to_num(arr[:, COL["offered_qps"]], nan=0.0).max()
        rule = window_replicas(loads, np.asarray(caps, dtype=np.float64), self.rule, self.interval_s, self.bounds)
        offset = np.rint(replica_probs @ (np.arange(replica_probs.shape[1]) - NOOP_ACTION[0])).astype(np.int64)
        actions = actions.copy()
        actions[:, 0] = offset + NOOP_ACTION[0]
        return residual_target(rule, knob_rows, actions, self.bounds)


class InProcessPolicy:
    """The policy loaded into the control loop's own process (no server)."""

    def __init__(self, policy: str | Path = "default", *, capacity_qps: float | None = None) -> None:
        """``capacity_qps``: requests/s one replica serves within 90 % of the SLO (``rlctl probe``),
        which a residual policy needs (:class:`ConfigError` here if it is missing, not at the first decision)."""
        self.model = PolicyModel(policy)
        self.name = self.model.name
        self.window = self.model.window
        self.carry: dict[str, list[float] | None] = {}
        if self.model.rule is not None and capacity_qps is None:
            raise ConfigError(
                f"policy {policy!s} is a residual policy over the capacity rule: give each replica's capacity with "
                "--capacity-qps (requests/s one replica serves within 90 % of the SLO, from rlctl probe)"
            )
        self.capacity_qps = capacity_qps

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision:
        knob_row = np.asarray(knobs, dtype=np.float64)[None]
        decision = self.model.decide([window], knob_row, [self.carry.get(service)], [self.capacity_qps])[0]
        self.carry[service] = decision.carry
        return decision


class HttpPolicy:
    """The policy server's ``POST /act`` (Ray Serve, see :mod:`rlctl.online.serve`).

    :param url: the server's base URL (``http://127.0.0.1:8000``) or the ``/act`` URL.
    :param timeout_s: connect and read timeout; the control loop sets it well inside one
        interval so a dead or slow server means a fallback in the same interval.
    """

    def __init__(
        self, url: str, *, timeout_s: float = 1.0, capacity_qps: float | None = None, window: int | None = None
    ) -> None:
        """``capacity_qps`` is sent with each request (a residual policy needs it); ``window``: samples
        per request (None: the loop's; a residual policy's rule looks back 300 s, 60 samples at 5 s)."""
        self.url = url if url.rstrip("/").endswith("/act") else url.rstrip("/") + "/act"
        self.timeout_s = timeout_s
        self.capacity_qps = capacity_qps
        self.name = f"http:{self.url}"
        self.window: int | None = window
        self.carry: dict[str, list[float]] = {}
        """Each service's decoder accumulator, sent back with its next request."""

    def act(self, service: str, window: npt.ArrayLike, knobs: npt.ArrayLike) -> Decision:
        payload: dict[str, Any] = {"service": service, "window": window_payload(window), "knobs": knobs_dict(knobs)}
        if self.capacity_qps is not None:
            payload["capacity_qps"] = self.capacity_qps
        if self.carry.get(service):
            payload["carry"] = self.carry[service]
        body = json.dumps(payload)
        req = urllib.request.Request(
            self.url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", errors="replace")
            raise PolicyUnavailable("policy-error", f"{self.url}: HTTP {exc.code}: {detail}") from None
        except TimeoutError:
            raise PolicyUnavailable("policy-timeout", f"{self.url}: no answer within {self.timeout_s:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise PolicyUnavailable("policy-timeout", f"{self.url}: no answer in {self.timeout_s:g} s") from None
            raise PolicyUnavailable("policy-error", f"{self.url}: {reason}") from None
        except json.JSONDecodeError as exc:
            raise PolicyUnavailable("policy-error", f"{self.url}: answer is not JSON ({exc.msg})") from None
        try:
            resp_model = ActResponse.model_validate(answer)
        except ValueError as exc:
            raise PolicyUnavailable("policy-error", f"{self.url}: malformed answer: {exc}") from None
        if resp_model.schema_hash != SCHEMA_HASH:
            raise PolicyUnavailable(
                "policy-error",
                f"{self.url} serves a policy of contract schema {resp_model.schema_hash}, this controller speaks "
                f"{SCHEMA_HASH}; deploy a policy trained with this rlctl version",
            )
        target = Knobs(**resp_model.target_knobs).to_array()  # type: ignore[arg-type]
        if resp_model.carry:
            self.carry[service] = resp_model.carry
        return Decision(resp_model.action, target, resp_model.policy, resp_model.schema_hash, resp_model.feature_hash,
                        resp_model.carry or None)  # fmt: skip


# ----------------------------------------------------------------------------- placeholder


def placeholder_artifact(
    out_dir: str | Path,
    *,
    seed: int = 0,
    net_arch: Sequence[int] = (128, 128),
    config: dict[str, Any] | None = None,
    bounds: KnobBounds | None = None,
) -> Path:
    """An *untrained* PPO policy with the shipped architecture, saved as a verified artifact.

    For benchmarks and drills when no trained policy exists: it has the right input and
    output shapes and inference cost, and decides nothing useful. Built from the
    contract's spaces alone, so it does not need the simulator. ``config`` is recorded as the
    training config (e.g. ``{"residual": True, "guard": True}`` for a residual policy's shape).
    """
    import tempfile

    import gymnasium as gym  # local: an untrained placeholder needs SB3 and gymnasium (heavy), serving does not
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    class _Spaces(gym.Env[Any, Any]):
        observation_space = gym.spaces.Box(FEATURE_LOW, FEATURE_HIGH, shape=(N_FEATURES,), dtype=np.float32)
        action_space = gym.spaces.MultiDiscrete(np.array(ACTION_NVEC, dtype=np.int64))

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:  # type: ignore[type-arg]
            return np.zeros(N_FEATURES, dtype=np.float32), {}

        def step(self, action: Any) -> Any:
            raise RuntimeError("placeholder spaces only: this env is never stepped")

    model = PPO("MlpPolicy", DummyVecEnv([_Spaces]), seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": list(net_arch), "activation_fn": torch.nn.Tanh})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "model.zip"
        model.save(zip_path)
        save_artifact(Path(out_dir), zip_path, name="placeholder-untrained", env_version="none", config=config or {},
                      seed=seed, bounds=bounds or KnobBounds(), features=FeatureSpec())  # fmt: skip
    return Path(out_dir)
