"""Validate Chaos Mesh manifests against the CRDs' ``openAPIV3Schema``.

The CRDs ship inside this package, ``chaos/schemas/chaos-mesh/*.yaml`` (Apache-2.0, see the
README beside them). A CRD's schema is OpenAPI 3.0, a dialect of JSON Schema
draft 4 with a few extra keywords; :func:`openapi_to_draft4` rewrites those so that
:class:`jsonschema.Draft4Validator` checks what the API server would:

============================  ===============================================================
OpenAPI / Kubernetes keyword  draft 4 rewrite
============================  ===============================================================
``nullable: true``            ``null`` added to ``type`` (and to ``enum`` if present)
``x-kubernetes-int-or-string`` ``anyOf: [integer, string]`` in place of ``type``
``format: int32`` / ``int64`` ``minimum`` / ``maximum`` of the signed range (unless set)
``format: int-or-string``     as ``x-kubernetes-int-or-string``
``x-kubernetes-preserve-
unknown-fields``              any property allowed (``additionalProperties`` left open)
other ``x-kubernetes-*``,     dropped (they steer merging and printing, not validity)
``example``, ``externalDocs``
============================  ===============================================================

With ``strict=True`` (the default) an object schema that lists ``properties`` also gets
``additionalProperties: false``: the API server's strict field validation, kubectl's
default, rejects unknown fields rather than silently pruning a misspelt one.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from rlctl.errors import ChaosError

API_VERSION = "chaos-mesh.org/v1alpha1"

_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DROP = {"example", "externalDocs", "discriminator", "readOnly", "writeOnly", "xml", "deprecated", "description"}
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


#: The Chaos Mesh CRDs shipped with rlctl.
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas" / "chaos-mesh"


def schemas_dir(path: Path = SCHEMAS_DIR) -> Path:
    """The folder of Chaos Mesh CRDs; a clear error if it is missing."""
    if not path.is_dir() or not any(path.glob("*.yaml")):
        raise ChaosError(
            f"no Chaos Mesh CRDs in {path}: the installation lost its package data "
            "(chaos/schemas/chaos-mesh/*.yaml); reinstall rlctl (pip install .) or restore them from the repository"
        )
    return path


def openapi_to_draft4(node: Any, *, strict: bool = True) -> Any:
    """Rewrite an OpenAPI 3.0 / Kubernetes structural schema as JSON Schema draft 4."""
    if isinstance(node, list):
        return [openapi_to_draft4(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: openapi_to_draft4(sub, strict=strict) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = openapi_to_draft4(value, strict=strict)
        else:
            out[key] = value
    fmt = node.get("format")
    if node.get("x-kubernetes-int-or-string") or fmt == "int-or-string":
        out.pop("type", None)
        out.pop("format", None)
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    elif fmt in _INT_RANGE:
        lo, hi = _INT_RANGE[fmt]
        out.setdefault("minimum", lo)
        out.setdefault("maximum", hi)
        out.pop("format")
    elif fmt is not None:
        out.pop("format")  # byte, date-time, ...: the draft 4 validator would not check them anyway
    if node.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    open_object = node.get("x-kubernetes-preserve-unknown-fields")
    if strict and "properties" in out and "additionalProperties" not in out and not open_object:
        out["additionalProperties"] = False
    return out


@functools.cache
def _crds(folder: Path) -> dict[str, dict[str, Any]]:
    """Chaos Mesh kind -> its v1alpha1 ``openAPIV3Schema``, from every CRD in ``folder``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=loader):  # a safe loader (C if available)
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            for version in doc["spec"]["versions"]:
                if version["name"] == "v1alpha1":
                    out[doc["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def known_kinds() -> list[str]:
    """The Chaos Mesh kinds a CRD was found for."""
    return sorted(_crds(schemas_dir()))


@functools.cache
def _validator(folder: Path, kind: str, strict: bool) -> Any:
    import jsonschema

    schema = openapi_to_draft4(_crds(folder)[kind], strict=strict)
    return jsonschema.Draft4Validator(schema)


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _metadata_problems(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return ["metadata: must be a mapping with name and namespace"]
    problems = []
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1123_LABEL.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 label (a-z, 0-9, '-', at most 63 characters)")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _DNS1123_LABEL.match(namespace)):
        problems.append(f"metadata.namespace: {namespace!r} is not a valid namespace name")
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{key}: {value!r} is not a valid label value (at most 63 characters)")
    return problems


def manifest_problems(obj: Any, *, strict: bool = True) -> list[str]:
    """Every schema violation of ``obj`` as ``path: message``; empty when valid."""
    if not isinstance(obj, dict):
        return [f"(top level): a manifest must be a mapping, not {type(obj).__name__}"]
    folder = schemas_dir()
    kind = obj.get("kind")
    crds = _crds(folder)
    if kind not in crds:
        return [f"kind: {kind!r} is not a Chaos Mesh kind with a CRD here; known: {', '.join(sorted(crds))}"]
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {obj.get('apiVersion')!r} should be {API_VERSION!r}")
    problems += _metadata_problems(obj.get("metadata"))
    errors = sorted(_validator(folder, kind, strict).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    problems += [f"{_path(e.absolute_path)}: {e.message}" for e in errors]
    return problems


def validate_manifest(obj: Any, *, strict: bool = True) -> None:
    """Raise :class:`ChaosError` listing each violation (path and message) of the CRD schema."""
    problems = manifest_problems(obj, strict=strict)
    if problems:
        kind = obj.get("kind", "?") if isinstance(obj, dict) else "?"
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        name = meta.get("name", "?") if isinstance(meta, dict) else "?"
        raise ChaosError(f"{kind} {name} does not validate against the Chaos Mesh CRD schema: " + "; ".join(problems))
