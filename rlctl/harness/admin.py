"""The one client of gosvc's admin API, ``/admin/knobs`` (GET and PUT, bearer token).

The online controller's :class:`~rlctl.online.actuators.AdminKnobsActuator`, the local chaos
backend's replica manager and the calibration's test-bed all set runtime knobs through
:class:`AdminClient`, so a refused token, a service without an admin token and an
unreachable listener read the same everywhere.

GOMEMLIMIT: the contract counts MiB, the admin API bytes (``mib * 2**20``, sent as is,
so the top rung, 8192 MiB, is a real 8 GiB limit); a service reporting 0 (no limit) reads
as the top rung, the contract's "no practical limit".
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlctl.contract import GOMEMLIMIT_LADDER_MIB
from rlctl.errors import ActuatorError, ConfigError

#: Knobs the Go service's admin endpoint sets, by their contract names.
RUNTIME_KNOBS: tuple[str, ...] = ("gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size")
MIB = 2**20
TOKEN_ENV = "GOSVC_ADMIN_TOKEN"
KNOBS_PATH = "/admin/knobs"


def read_token(token_file: str | Path | None = None, env: str = TOKEN_ENV) -> str:
    """The admin bearer token: the first line of ``token_file``, else ``$GOSVC_ADMIN_TOKEN``."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"admin token file {token_file}: {exc.strerror or exc}; pass a readable file") from None
        if not token:
            raise ConfigError(f"admin token file {token_file} is empty; write the bearer token into it")
        return token
    token = os.environ.get(env, "").strip()
    if not token:
        raise ConfigError(f"no admin token: pass --admin-token-file FILE or set {env}")
    return token


def to_admin(knobs: Mapping[str, Any]) -> dict[str, int]:
    """Contract knob values -> the admin API's JSON fields."""
    out: dict[str, int] = {}
    for name, value in knobs.items():
        if name == "gomemlimit_mib":
            out["gomemlimit_bytes"] = int(value) * MIB
        elif name in RUNTIME_KNOBS:
            out[name] = int(value)
        else:
            raise ActuatorError(f"the admin endpoint does not set {name!r}; it sets {list(RUNTIME_KNOBS)}")
    return out


def from_admin(body: Mapping[str, Any]) -> dict[str, int]:
    """The admin API's JSON -> contract knob values (GOMEMLIMIT 0, no limit, reads as the top rung)."""
    out: dict[str, int] = {}
    for name in RUNTIME_KNOBS:
        key = "gomemlimit_bytes" if name == "gomemlimit_mib" else name
        if key not in body:
            continue
        value = int(body[key])
        if name == "gomemlimit_mib":
            value = GOMEMLIMIT_LADDER_MIB[-1] if value <= 0 else round(value / MIB)
        out[name] = value
    return out


def knobs_url(url: str) -> str:
    """``url`` as the knobs endpoint: an admin listener's root gets ``/admin/knobs`` appended."""
    return url if url.rstrip("/").endswith(KNOBS_PATH) else url.rstrip("/") + KNOBS_PATH


def admin_request(method: str, url: str, *, token: str, body: Any = None, timeout_s: float) -> Any:
    """One JSON request to the admin API; every failure is an :class:`ActuatorError` with the fix."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        except (json.JSONDecodeError, AttributeError):
            detail = exc.reason
        hint = {
            401: "the token was rejected: check --admin-token-file",
            403: "the service has no admin token configured: start it with --admin-token-file",
        }.get(exc.code, "")
        raise ActuatorError(f"{method} {url}: HTTP {exc.code}: {detail}" + (f"; {hint}" if hint else "")) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ActuatorError(
            f"{method} {url}: cannot reach the admin endpoint ({reason}); is it the service's admin listener "
            "(gosvc's --admin-addr, the admin_addr of its startup line)?"
        ) from None
    except json.JSONDecodeError as exc:
        raise ActuatorError(f"{method} {url}: the answer is not JSON ({exc.msg})") from None


class AdminClient:
    """``/admin/knobs`` of one service (``url``: the admin listener's root or the knobs URL itself)."""

    def __init__(self, url: str, *, token: str, timeout_s: float = 2.0) -> None:
        self.url = knobs_url(url)
        self.token = token
        self.timeout_s = timeout_s

    def get(self) -> dict[str, Any]:
        """The service's knobs as the admin API reports them."""
        result: dict[str, Any] = admin_request("GET", self.url, token=self.token, timeout_s=self.timeout_s)
        return result

    def put(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Set admin-API fields (``gomaxprocs``, ``gogc``, ``gomemlimit_bytes``, ...); returns the knobs after."""
        result: dict[str, Any] = admin_request(
            "PUT", self.url, token=self.token, body=dict(body), timeout_s=self.timeout_s
        )
        return result

    def get_knobs(self) -> dict[str, int]:
        """The runtime knobs by contract name."""
        return from_admin(self.get())

    def put_knobs(self, knobs: Mapping[str, Any]) -> dict[str, int]:
        """Set runtime knobs by contract name; returns what the service reports afterwards."""
        return from_admin(self.put(to_admin(knobs)))
