"""KubeRay's CRD schemas (OpenAPI v3 with Kubernetes extensions) as plain JSON Schema, the way the
API server applies them: `x-kubernetes-int-or-string` (and `format: int-or-string`) -> integer or
string; `nullable` -> null allowed; int32/int64 ranges; objects with declared properties reject
unknown fields (kubectl's default strict field validation) unless
`x-kubernetes-preserve-unknown-fields` says otherwise; objects without declared properties (the
top-level `metadata`, which the API server checks as ObjectMeta) stay free-form. CEL rules
(`x-kubernetes-validations`) are not evaluated.

Reading the 3.3 MB of CRD YAML and converting it takes 4-10 s, so `crd_schemas` keeps the result
in the build cache (testkit.build_cache), keyed by the CRD files and this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testkit.build_cache import REPO, cache_key, cached_file

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# ObjectMeta as far as these manifests use it; other ObjectMeta fields are allowed.
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
# Core kinds the manifests may contain besides KubeRay's (no CRD for them): a strict subset.
CORE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "ServiceAccount"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "v1"},
            "kind": {"const": "ServiceAccount"},
            "metadata": OBJECT_META,
            "automountServiceAccountToken": {"type": "boolean"},
            "imagePullSecrets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
        },
    }
}


def k8s_to_jsonschema(node: Any) -> Any:
    """One OpenAPI v3 (Kubernetes structural) schema node -> plain JSON Schema, recursively."""
    if isinstance(node, list):
        return [k8s_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "format"):
            continue
        if key == "properties":
            out[key] = {name: k8s_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("anyOf", "allOf", "oneOf") or (
            key in ("items", "additionalProperties", "not") and isinstance(value, dict)
        ):
            out[key] = k8s_to_jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        out.pop("type", None)
        out.pop("anyOf", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("format") in INT_RANGES:
        lo, hi = INT_RANGES[node["format"]]
        out.setdefault("minimum", lo)
        out.setdefault("maximum", hi)
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def convert_crds(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, for every served version of every CRD, plus CORE_SCHEMAS."""
    import jsonschema
    import yaml

    found: dict[tuple[str, str], dict[str, Any]] = dict(CORE_SCHEMAS)
    for path in sorted(crd_dir.glob("*.yaml")):
        # libyaml's C loader: the three CRDs are 3.3 MB of YAML (~14 s with the pure-Python loader).
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = k8s_to_jsonschema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = OBJECT_META
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted(
                {*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"}
            )
            jsonschema.Draft7Validator.check_schema(schema)
            found[(f"{group}/{version['name']}", kind)] = schema
    return found


_FILE = "schemas.json"


def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """convert_crds(crd_dir), from the build cache when the CRD files and this code are unchanged."""
    sources = [*sorted(crd_dir.glob("*.yaml")), Path(__file__), REPO / "testkit" / "build_cache.py"]
    key = cache_key({"kind": "kuberay-jsonschema"}, sources, ("pyyaml", "jsonschema"))

    def build(directory: Path) -> None:
        directory.mkdir(parents=True)
        converted = [[api, kind, schema] for (api, kind), schema in convert_crds(crd_dir).items()]
        (directory / _FILE).write_text(json.dumps(converted), encoding="utf-8")

    rows = json.loads(cached_file("kuberay-jsonschema", key, _FILE, build))
    return {(api, kind): schema for api, kind, schema in rows}
