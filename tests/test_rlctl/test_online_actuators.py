"""Actuators against real things: gosvc's /admin/knobs, local gosvc processes, a fake API server, MSR files."""

from __future__ import annotations

import struct
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakek8s import FakeKubeAPI
from online_support import TOKEN, gosvc, token_file

from rlctl.contract import KNOB_COL, Knobs
from rlctl.errors import ActuatorError, ConfigError
from rlctl.online.actuators import (
    Actuators,
    AdminKnobsActuator,
    K8sScaleActuator,
    MsrActuator,
    ProcessReplicaActuator,
    ReplicaActuator,
    from_admin,
    read_token,
    to_admin,
)
from rlctl.online.procs import GoService


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoService]:
    with gosvc(tmp_path_factory.mktemp("act"), "--cpu-us", "20", "--gomaxprocs", "2", "--pool-size", "256",
               "--conn-pool", "16") as svc:  # fmt: skip
        yield svc


def test_gomemlimit_maps_mib_to_bytes_and_unlimited_to_the_top_rung() -> None:
    assert to_admin({"gomemlimit_mib": 512, "gogc": 200}) == {"gomemlimit_bytes": 512 * 2**20, "gogc": 200}
    assert to_admin({"gomemlimit_mib": 8192}) == {"gomemlimit_bytes": 8192 * 2**20}
    assert from_admin({"gomemlimit_bytes": 0, "gomaxprocs": 3})["gomemlimit_mib"] == 8192
    assert from_admin({"gomemlimit_bytes": 256 * 2**20})["gomemlimit_mib"] == 256
    with pytest.raises(ActuatorError, match="the admin endpoint does not set 'replicas'"):
        to_admin({"replicas": 2})


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_token(token_file(tmp_path)) == TOKEN
    monkeypatch.delenv("GOSVC_ADMIN_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"no admin token: pass --admin-token-file FILE or set GOSVC_ADMIN_TOKEN"):
        read_token(None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty; write the bearer token into it"):
        read_token(tmp_path / "empty")


def test_admin_get_and_put_on_a_real_service(service: GoService, tmp_path: Path) -> None:
    admin = AdminKnobsActuator(service.admin_url, token=TOKEN)
    assert admin.get() == {"gomaxprocs": 2, "gogc": 100, "gomemlimit_mib": 8192, "object_pool_size": 256,
                           "conn_pool_size": 16}  # fmt: skip
    assert admin.put({"gogc": 200, "gomemlimit_mib": 1024})["gomemlimit_mib"] == 1024
    from rlctl.telemetry.scrape import Scraper

    settings = Scraper(service.metrics_url).snapshot().settings()  # what the service itself reports
    assert (settings["gogc"], settings["gomemlimit_bytes"]) == (200, 1024 * 2**20)
    admin.put({"gogc": 100, "gomemlimit_mib": 8192})


def test_admin_errors_say_what_to_fix(service: GoService) -> None:
    with pytest.raises(ActuatorError, match=r"HTTP 401: .*the token was rejected: check --admin-token-file"):
        AdminKnobsActuator(service.admin_url, token="wrong").get()
    with pytest.raises(ActuatorError, match=r"HTTP 400: gogc=0 is out of range"):
        AdminKnobsActuator(service.admin_url, token=TOKEN).put({"gogc": 0})
    with pytest.raises(ActuatorError, match=r"cannot reach the admin endpoint"):
        AdminKnobsActuator("http://127.0.0.1:9/admin/knobs", token=TOKEN, timeout_s=0.5).get()


def test_k8s_scale_actuator_against_the_fake_api_server() -> None:
    with FakeKubeAPI() as api:
        api.add_deployment("shop", "gosvc", 3)
        act = K8sScaleActuator(api.api_client(), "shop/gosvc")
        assert isinstance(act, ReplicaActuator)
        assert act.get_replicas() == 3
        assert act.set_replicas(5) == 5
        assert act.get_replicas() == 5
        patch = api.calls("PATCH")[-1]
        assert patch.body == {"spec": {"replicas": 5}} and patch.content_type == "application/merge-patch+json"
        api.fail("PATCH", "/scale$", 403)
        with pytest.raises(ActuatorError, match=r"forbidden to patch deployments/scale"):
            act.set_replicas(6)
        with pytest.raises(ConfigError, match="expected NAMESPACE/NAME"):
            K8sScaleActuator(api.api_client(), "gosvc")


@pytest.mark.real  # gosvc replicas
def test_process_replica_actuator_starts_and_stops_real_processes(tmp_path: Path) -> None:
    stopped: list[str] = []
    with ProcessReplicaActuator(["--cpu-us", "10"], token_file=token_file(tmp_path),
                                pre_stop=lambda r: stopped.append(r.url)) as replicas:  # fmt: skip
        assert replicas.set_replicas(2) == 2
        urls = replicas.urls()
        assert len(set(urls)) == 2
        for url in urls:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                assert resp.status == 200
        assert replicas.set_replicas(1) == 1 and stopped == [urls[1]]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{urls[1]}/healthz", timeout=2)
        # A replica that dies on its own stops counting; scaling brings the count back.
        replicas.replicas[0].kill()
        assert replicas.get_replicas() == 0
        assert replicas.set_replicas(1) == 1
    assert replicas.get_replicas() == 0


@pytest.mark.real  # gosvc replicas
def test_a_dead_replica_is_dropped_once_when_threads_read_at_the_same_time(tmp_path: Path) -> None:
    # The loop and a telemetry source read the replicas from two threads: each read drops a
    # replica that died; without the lock two readers removed the same one (ValueError).
    with ProcessReplicaActuator(["--cpu-us", "10", "--gomaxprocs", "1"], token_file=token_file(tmp_path)) as replicas:
        assert replicas.set_replicas(3) == 3
        for _ in range(3):
            replicas.replicas[0].kill()
            start = threading.Barrier(8)
            errors: list[BaseException] = []
            counts: list[int] = []

            def read(start: threading.Barrier, counts: list[int], errors: list[BaseException]) -> None:
                start.wait()
                try:
                    counts.append(replicas.get_replicas())
                    replicas.metrics_urls()
                except BaseException as exc:  # what a reader would have died of
                    errors.append(exc)

            threads = [threading.Thread(target=read, args=(start, counts, errors)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert errors == [] and counts == [2] * 8
            assert replicas.set_replicas(3) == 3


@pytest.mark.real  # gosvc replicas
def test_actuators_apply_scales_and_sets_every_replica(tmp_path: Path) -> None:
    tok = token_file(tmp_path)
    with ProcessReplicaActuator(["--cpu-us", "10", "--gomaxprocs", "1"], token_file=tok) as replicas:
        replicas.set_replicas(1)
        acts = Actuators(admin=AdminKnobsActuator(replicas.admin_urls, token_file=tok), replicas=replicas)
        assert acts.controllable() == ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size",
                                       "conn_pool_size")  # fmt: skip
        current, errors = acts.read(np.full(8, np.nan))
        assert errors == {} and current[KNOB_COL["replicas"]] == 1 and current[KNOB_COL["gomaxprocs"]] == 1
        target = current.copy()
        target[KNOB_COL["replicas"]] = 2
        target[KNOB_COL["gogc"]] = 400
        now, results = acts.apply(current, target)
        assert results["replicas"] == "ok: 1 -> 2" and results["admin"].startswith("ok: gomaxprocs=1, gogc=400")
        assert now[KNOB_COL["replicas"]] == 2 and now[KNOB_COL["gogc"]] == 400
        for url in replicas.admin_urls():  # the new replica got the same settings
            assert AdminKnobsActuator(url, token_file=tok).get()["gogc"] == 400
        # Turbo without MSR writes enabled: reported, not raised; the knob keeps its value.
        t2 = now.copy()
        t2[KNOB_COL["turbo"]] = 0.0
        now2, results2 = acts.apply(np.where(np.isnan(now), 1.0, now), t2)
        assert results2 == {"turbo": "error: MSR writes are not enabled (--allow-msr-writes)"}
        assert now2[KNOB_COL["turbo"]] == 1.0


def test_msr_actuator_refuses_without_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"pass --allow-msr-writes \(allow_msr_writes=True\) to do it on purpose"):
        MsrActuator(allow_writes=False)


def _msr_tree(root: Path) -> Path:
    for cpu in (0, 1):
        (root / str(cpu)).mkdir(parents=True)
        with (root / str(cpu) / "msr").open("wb") as fh:
            fh.truncate(0x1000)
    return root


def test_msr_actuator_writes_the_real_registers_of_a_device_tree(tmp_path: Path) -> None:
    """MSR device files as plain files (register = offset), written through rlctl.telemetry.sensors.

    0x1A0 and 0x1A4 overlap in a plain file (8-byte registers 4 apart), so each knob gets its own tree.
    """
    turbo = MsrActuator(allow_writes=True, dev_root=_msr_tree(tmp_path / "t"), vendor="GenuineIntel")
    prefetch = MsrActuator(allow_writes=True, dev_root=_msr_tree(tmp_path / "p"), vendor="GenuineIntel")
    assert turbo.get() == {"turbo": True, "prefetch": True}
    turbo.set("turbo", False)
    prefetch.set("prefetch", False)
    for cpu in (0, 1):
        assert struct.unpack_from("<Q", (tmp_path / "t" / str(cpu) / "msr").read_bytes(), 0x1A0)[0] == 1 << 38
        assert struct.unpack_from("<Q", (tmp_path / "p" / str(cpu) / "msr").read_bytes(), 0x1A4)[0] == 0xF
    assert turbo.get()["turbo"] is False and prefetch.get()["prefetch"] is False
    now, results = Actuators(msr=turbo).apply(Knobs(turbo=False).to_array(), Knobs().to_array())
    assert results == {"turbo": "ok: on"} and now[KNOB_COL["turbo"]] == 1.0
    assert struct.unpack_from("<Q", (tmp_path / "t" / "0" / "msr").read_bytes(), 0x1A0)[0] == 0
    with pytest.raises(ActuatorError, match="turbo/prefetch MSRs 0x1A0/0x1A4 are Intel registers"):
        MsrActuator(allow_writes=True, dev_root=tmp_path / "t", vendor="AuthenticAMD").set("turbo", True)
