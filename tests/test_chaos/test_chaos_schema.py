"""The OpenAPI -> draft 4 converter and manifest validation against the Chaos Mesh CRDs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest

from chaos import mesh, schema
from chaos.spec import scenario_from_dict
from rlctl.errors import ChaosError


def good() -> dict:
    s = scenario_from_dict(
        {
            "name": "t",
            "faults": [
                {"kind": "network-delay", "start_s": 0, "duration_s": 30, "selector": {"namespace": "demo"}},
            ],
        }
    )
    return mesh.render_scenario(s, run_id="r1")[0]


# ------------------------------------------------------------------ the converter


def test_nullable_adds_null() -> None:
    out = schema.openapi_to_draft4({"type": "integer", "nullable": True, "enum": [1, 2]})
    assert out == {"type": ["integer", "null"], "enum": [1, 2, None]}
    jsonschema.Draft4Validator(out).validate(None)


def test_int_or_string() -> None:
    for node in ({"x-kubernetes-int-or-string": True}, {"type": "string", "format": "int-or-string"}):
        v = jsonschema.Draft4Validator(schema.openapi_to_draft4(node))
        assert v.is_valid(3) and v.is_valid("25%") and not v.is_valid(1.5) and not v.is_valid([])


def test_integer_formats_become_bounds() -> None:
    v = jsonschema.Draft4Validator(schema.openapi_to_draft4({"type": "integer", "format": "int32", "minimum": 1}))
    assert v.is_valid(2**31 - 1) and not v.is_valid(2**31) and not v.is_valid(0)
    assert schema.openapi_to_draft4({"type": "string", "format": "date-time"}) == {"type": "string"}


def test_kubernetes_extensions_and_docs_are_dropped() -> None:
    node = {
        "type": "array",
        "description": "d",
        "x-kubernetes-list-type": "atomic",
        "items": {"type": "string", "example": "x"},
    }
    assert schema.openapi_to_draft4(node) == {"type": "array", "items": {"type": "string"}}


def test_strict_closes_objects_unless_preserving_unknown_fields() -> None:
    node = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert schema.openapi_to_draft4(node)["additionalProperties"] is False
    assert "additionalProperties" not in schema.openapi_to_draft4(node, strict=False)
    open_node = {**node, "x-kubernetes-preserve-unknown-fields": True}
    assert "additionalProperties" not in schema.openapi_to_draft4(open_node)
    mapping = {"type": "object", "additionalProperties": {"type": "string"}}
    assert schema.openapi_to_draft4(mapping) == mapping


def test_exclusive_minimum_keeps_draft4_meaning() -> None:
    v = jsonschema.Draft4Validator(
        schema.openapi_to_draft4({"type": "integer", "minimum": 0, "exclusiveMinimum": True, "nullable": True})
    )
    assert v.is_valid(1) and v.is_valid(None) and not v.is_valid(0)


def test_every_crd_converts_to_a_valid_draft4_schema() -> None:
    kinds = schema.known_kinds()
    assert set(mesh.PLURALS) <= set(kinds)
    for kind in kinds:
        converted = schema.openapi_to_draft4(schema._crds(schema.schemas_dir())[kind])
        jsonschema.Draft4Validator.check_schema(converted)


# ------------------------------------------------------------------ validation


def test_rendered_manifest_is_valid() -> None:
    schema.validate_manifest(good())


BROKEN = [
    ("bad action", lambda m: m["spec"].update(action="explode"), r"spec\.action: 'explode' is not one of"),
    ("no selector", lambda m: m["spec"].pop("selector"), r"\(top level\)|spec: 'selector' is a required property"),
    (
        "latency pattern",
        lambda m: m["spec"]["delay"].update(latency="50"),
        r"spec\.delay\.latency: '50' does not match",
    ),
    ("wrong type", lambda m: m["spec"]["delay"].update(correlation=25), r"spec\.delay\.correlation: 25 is not of type"),
    ("unknown field", lambda m: m["spec"].update(durations="30s"), r"spec: Additional properties.*'durations'"),
    ("bad mode", lambda m: m["spec"].update(mode="most"), r"spec\.mode: 'most' is not one of"),
    ("bad name", lambda m: m["metadata"].update(name="Not_DNS"), r"metadata\.name: 'Not_DNS' is not a DNS-1123"),
    ("api version", lambda m: m.update(apiVersion="v1"), r"apiVersion: 'v1' should be 'chaos-mesh.org/v1alpha1'"),
    ("nested list", lambda m: m["spec"]["selector"].update(namespaces="demo"), r"namespaces: 'demo' is not of type"),
]


@pytest.mark.parametrize(("label", "breaker", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_manifest_fails_with_path_and_message(label: str, breaker: object, expected: str) -> None:
    manifest = copy.deepcopy(good())
    breaker(manifest)  # type: ignore[operator]
    with pytest.raises(ChaosError, match=r"^NetworkChaos \S+ does not validate against the Chaos Mesh CRD") as info:
        schema.validate_manifest(manifest)
    assert re.search(expected, str(info.value)), str(info.value)


def test_every_violation_is_listed() -> None:
    manifest = good()
    manifest["spec"]["mode"] = "most"
    manifest["spec"]["bandwidth"] = {"rate": "1mbit", "limit": 0, "buffer": 0}
    problems = schema.manifest_problems(manifest)
    assert any(p.startswith("spec.mode:") for p in problems)
    assert any(p.startswith("spec.bandwidth.limit: 0 is less than the minimum of 1") for p in problems)
    assert any(p.startswith("spec.bandwidth.buffer:") for p in problems)


def test_broken_embedded_chaos_in_schedule_fails() -> None:
    s = scenario_from_dict(
        {
            "name": "t",
            "faults": [
                {
                    "kind": "cpu-stress",
                    "start_s": 0,
                    "duration_s": 10,
                    "selector": {"namespace": "demo"},
                    "repeat": {"every_s": 60},
                }
            ],
        }
    )
    manifest = mesh.render_scenario(s, run_id="r1")[0]
    schema.validate_manifest(manifest)
    manifest["spec"]["stressChaos"]["stressors"]["cpu"]["load"] = 150
    with pytest.raises(ChaosError, match=r"spec\.stressChaos\.stressors\.cpu\.load: 150 is greater than the maximum"):
        schema.validate_manifest(manifest)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ChaosError, match=r"kind: 'DNSChaos' is not a Chaos Mesh kind.*NetworkChaos"):
        schema.validate_manifest({"apiVersion": mesh.API_VERSION, "kind": "DNSChaos", "metadata": {"name": "x"}})


def test_missing_schemas_dir_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ChaosError, match=r"no Chaos Mesh CRDs in .*reinstall rlctl"):
        schema.schemas_dir(tmp_path)


def test_the_crds_ship_inside_the_package() -> None:
    # Every kind the renderer emits has its CRD in the package, next to the licence it came with.
    assert schema.schemas_dir() == Path(schema.__file__).resolve().parent / "schemas" / "chaos-mesh"
    assert (schema.SCHEMAS_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert schema.known_kinds() == sorted(
        ["IOChaos", "NetworkChaos", "PodChaos", "Schedule", "StressChaos", "TimeChaos", "Workflow"]
    )
