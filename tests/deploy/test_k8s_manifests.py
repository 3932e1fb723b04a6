"""KubeRay manifests under k8s/, validated offline against KubeRay's own CRD schemas
(../shared/kuberay-crds, copied unchanged from the KubeRay repository), and held to what a user
relies on: the RayService serves serve_config.yaml's applications from object storage, the
RayJob reads and writes s3:// only, images are the project's at the pinned Ray version, Ray
token auth is on, and the dashboard is not exposed.

The CRD schemas are OpenAPI v3 with Kubernetes extensions; testkit.k8s_schema turns them into
plain JSON Schema the way the API server applies them (its docstring lists the rules) and keeps the
result in the test build cache, so only the first run after a change of the CRDs converts them.
"""

from __future__ import annotations

import copy
import itertools
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from testkit.k8s_schema import crd_schemas, k8s_to_jsonschema
from testkit.pins import PROJECT_PINS

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = Path(__file__).parents[2] / ".." / "shared" / "kuberay-crds"
K8S_DIR = REPO / "k8s"
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
SERVICE_ACCOUNT = "qmatch-ray"
AUTH_SECRET = "qmatch-ray-auth"
PATH_FLAGS = {"--artifact", "--input", "--output", "--embeddings", "--out"}
OBJECT_STORE = ("s3://",)
IMAGE = re.compile(
    rf"^[\w.-]+(?::\d+)?(?:/[\w.-]+)*/qmatch:{re.escape(PROJECT_PINS.version)}"
    rf"-ray{re.escape(PROJECT_PINS.ray)}-{PROJECT_PINS.python_tag}-(?P<device>cpu|gpu)$"
)

pytestmark = pytest.mark.skipif(
    not CRD_DIR.is_dir(),
    reason=f"KubeRay CRDs not found at {CRD_DIR} (../shared/kuberay-crds, reference data)",
)


@cache
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema of every served CRD version, plus the core kinds."""
    return crd_schemas(CRD_DIR)


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one object, as 'path: message' lines (empty = valid)."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    schema = schemas().get(key)
    if schema is None:
        return [f"no schema for apiVersion/kind {key} (not a KubeRay CRD nor a known core kind)"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in load_docs(path)]


def only(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in all_docs() if d["kind"] == kind]
    return doc


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]["rayClusterConfig"]


def pod_templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """'head' / worker group name / 'submitter' -> pod template of a RayJob or RayService."""
    spec = cluster_spec(doc)
    out = {"head": spec["headGroupSpec"]["template"]}
    out |= {g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])}
    if doc["spec"].get("submitterPodTemplate"):
        out["submitter"] = doc["spec"]["submitterPodTemplate"]
    return out


# --- schema validation ------------------------------------------------------------------------


@pytest.mark.slow  # ~13 s for the RayJob CRD schema
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_document_validates_against_its_crd(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        errors = validation_errors(doc)
        assert not errors, f"{path.name} {doc.get('kind')}:\n" + "\n".join(errors)


def test_rayjob_and_rayservice_are_checked_against_the_kuberay_schema() -> None:
    for kind in ("RayJob", "RayService"):
        assert ("ray.io/v1", kind) in schemas()
        assert only(kind)["apiVersion"] == "ray.io/v1"


def broken(kind: str, edit: Any) -> list[str]:
    doc = copy.deepcopy(only(kind))
    edit(doc)
    return validation_errors(doc)


def test_a_wrong_type_fails_validation() -> None:
    def replicas_as_words(doc: dict[str, Any]) -> None:
        cluster_spec(doc)["workerGroupSpecs"][0]["replicas"] = "two"

    errors = broken("RayService", replicas_as_words)
    assert any("replicas" in e and "'two'" in e for e in errors), errors


def test_a_non_string_ray_start_param_fails_validation() -> None:
    def int_param(doc: dict[str, Any]) -> None:
        cluster_spec(doc)["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0

    errors = broken("RayJob", int_param)
    assert any("rayStartParams.num-cpus" in e and "string" in e for e in errors), errors


def test_a_misspelt_field_fails_validation() -> None:
    def typo(doc: dict[str, Any]) -> None:
        doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")

    errors = broken("RayJob", typo)
    assert any("shutdownAfterJobFinish" in e for e in errors), errors


def test_serve_config_must_be_a_string_and_auth_mode_an_enum_value() -> None:
    def as_mapping(doc: dict[str, Any]) -> None:
        doc["spec"]["serveConfigV2"] = yaml.safe_load(doc["spec"]["serveConfigV2"])
        cluster_spec(doc)["authOptions"]["mode"] = "on"

    errors = broken("RayService", as_mapping)
    assert any(e.startswith("spec.serveConfigV2:") for e in errors), errors
    assert any("authOptions.mode" in e for e in errors), errors


def test_schema_conversion_handles_kubernetes_extensions() -> None:
    schema = k8s_to_jsonschema(
        {
            "type": "object",
            "properties": {
                "port": {
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "x-kubernetes-int-or-string": True,
                },
                "qty": {"type": "string", "format": "int-or-string"},
                "when": {"type": "string", "nullable": True},
                "count": {"type": "integer", "format": "int32"},
                "free": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
                "anything": {"type": "object"},
            },
        }
    )
    ok = {
        "port": "http",
        "qty": 2,
        "when": None,
        "count": 5,
        "free": {"b": 1},
        "strict": {"a": "x"},
        "anything": {"z": 1},
    }
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(ok))
    for bad in ({"port": 1.5}, {"count": 2**31}, {"strict": {"b": "x"}}, {"when": 3}, {"extra": 1}):
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), bad


# --- what users rely on -----------------------------------------------------------------------


def test_rayservice_serves_the_applications_of_serve_config() -> None:
    local = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    remote = yaml.safe_load(only("RayService")["spec"]["serveConfigV2"])

    def shape(config: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(a["name"], a["import_path"], a.get("route_prefix", "/")) for a in config["applications"]]

    assert shape(remote) == shape(local)
    for app_local, app_remote in zip(local["applications"], remote["applications"], strict=True):
        args = app_remote["args"]
        assert args["artifact"].startswith(OBJECT_STORE), args["artifact"]
        assert args["index"].startswith(OBJECT_STORE), args["index"]
        missing = set(app_local["args"]) - set(args)
        assert not missing, f"serve_config.yaml args not set in the RayService: {missing}"
    # Reachable by the serve Service: every pod's proxy on all interfaces, port 8000.
    assert remote["http_options"]["host"] == "0.0.0.0"
    assert remote["http_options"]["port"] == 8000
    assert remote.get("proxy_location", "EveryNode") == "EveryNode"


def test_rayservice_args_are_accepted_by_the_app() -> None:
    """The args go through the app's own AppArgs model (extra fields forbidden) and pick the GPU
    layout: the app's GPU topology, whose model deployment sits on the GPU group's custom
    resource (an override under another deployment's name would silently not apply)."""
    from deployments.app import AppArgs, resolve_topology, with_gpu_profile
    from embedder.config import batch_defaults
    from settings.loader import as_dict

    model_deployment = {"fused": "FusedEncoder", "graph": "Backbone"}
    remote = yaml.safe_load(only("RayService")["spec"]["serveConfigV2"])
    for app in remote["applications"]:
        args = with_gpu_profile(AppArgs.model_validate(app["args"]))
        topology = resolve_topology(args)
        assert args.num_gpus > 0 and topology in model_deployment, topology
        assert args.session.get("providers") == ["cuda"]
        assert set(args.deployments) <= {"Ingress", "Searcher", model_deployment[topology]}, args.deployments
        # GPU batching, not the CPU's 1,024-token calls (the same values the app picks by itself).
        assert app["args"]["batching"]["batch"] == as_dict(batch_defaults("gpu"))
        backbone = args.deployments[model_deployment[topology]]
        assert backbone["ray_actor_options"]["resources"] == {"gpu_worker": 1}
        scaling = backbone["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
        gpu_group = next(
            g for g in cluster_spec(only("RayService"))["workerGroupSpecs"] if g["groupName"] == "gpu"
        )
        assert scaling["max_replicas"] <= gpu_group["maxReplicas"], "more model replicas than GPU pods"
        assert '"gpu_worker": 1' in gpu_group["rayStartParams"]["resources"].replace("\\", "")
        # no logical CPUs on GPU pods: CPU-only demand never scales the GPU group up
        assert gpu_group["rayStartParams"]["num-cpus"] == "0"


def entrypoint_commands(entrypoint: str) -> list[list[str]]:
    """The commands of the RayJob entrypoint, which must be one quoted `bash -c '...'` word list:
    KubeRay pastes the entrypoint unquoted into the submitter's shell line."""
    words = shlex.split(entrypoint)
    assert words[:2] == ["bash", "-c"] and len(words) == 3, f"entrypoint is not bash -c '...': {words[:3]}"
    return [shlex.split(part) for part in words[2].split("&&")]


def test_rayjob_runs_embed_then_build_index_on_object_storage_only() -> None:
    from jobs.build_index.cli import parse_args as build_args
    from jobs.embed_corpus.cli import parse_args as embed_args

    commands = entrypoint_commands(only("RayJob")["spec"]["entrypoint"])
    assert [c[:3] for c in commands] == [
        ["python", "-m", "jobs.embed_corpus"],
        ["python", "-m", "jobs.build_index"],
    ]
    embed, build = (c[3:] for c in commands)
    paths = {}
    for argv in (embed, build):
        for flag, value in itertools.pairwise(argv):
            if flag in PATH_FLAGS:
                assert value.startswith(OBJECT_STORE), f"{flag} {value} is not an object-store URI"
                paths[flag] = value
    assert set(paths) == PATH_FLAGS
    assert paths["--embeddings"] == paths["--output"], "build_index must read what embed_corpus wrote"
    # The flags are the CLIs' own (parsed by their parsers, so a renamed flag fails here).
    cfg = embed_args(embed)
    assert (cfg.artifact, cfg.input, cfg.output) == (paths["--artifact"], paths["--input"], paths["--output"])
    assert build_args(build).out == paths["--out"]


def test_rayjob_cleans_up_after_itself() -> None:
    spec = only("RayJob")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    assert spec.get("activeDeadlineSeconds", 0) > 0


def test_images_are_the_projects_at_the_pinned_ray_version() -> None:
    for kind in ("RayJob", "RayService"):
        doc = only(kind)
        assert cluster_spec(doc)["rayVersion"] == PROJECT_PINS.ray
        for name, template in pod_templates(doc).items():
            for container in template["spec"]["containers"]:
                match = IMAGE.match(container["image"])
                assert match, (
                    f"{kind} {name}: {container['image']} is not qmatch:<version>-ray<pin>-<py>-<device>"
                )
                limits = container.get("resources", {}).get("limits", {})
                wants_gpu = int(limits.get("nvidia.com/gpu", 0)) > 0
                assert (match["device"] == "gpu") == wants_gpu, f"{kind} {name}: GPU image iff GPU limit"


def test_rayservice_has_autoscaling_cpu_and_gpu_groups() -> None:
    spec = cluster_spec(only("RayService"))
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"], f"{group['groupName']} cannot scale"
    gpu = groups["gpu"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert gpu["rayStartParams"]["num-gpus"] == str(container["resources"]["limits"]["nvidia.com/gpu"])
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
    )
    assert cluster_spec(only("RayService"))["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_token_auth_is_on() -> None:
    for kind in ("RayJob", "RayService"):
        auth = cluster_spec(only(kind))["authOptions"]
        assert auth["mode"] == "token", kind
        assert auth["secretName"] == AUTH_SECRET, kind
    # The submitter (a separate pod) sends the same token.
    (submitter,) = only("RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"]
    env = {e["name"]: e for e in submitter["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == AUTH_SECRET


def test_dashboard_is_not_exposed_and_serve_exposes_only_its_port() -> None:
    for kind in ("RayJob", "RayService"):
        head = cluster_spec(only(kind))["headGroupSpec"]
        assert head.get("enableIngress", False) is False, f"{kind}: Ingress for the dashboard"
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{kind}: head service leaves the cluster"
        assert "headService" not in head
        # dashboard-host stays 0.0.0.0 inside the pod (the operator and the RayJob submitter reach
        # the Jobs API through the head's ClusterIP service); "not exposed" is the checks above.
    serve = only("RayService")["spec"]["serveService"]["spec"]
    assert serve.get("type", "ClusterIP") == "ClusterIP"
    assert [p["port"] for p in serve["ports"]] == [8000]
    # No other Service / Ingress objects in k8s/.
    kinds = {d["kind"] for d in all_docs()}
    assert not kinds & {"Service", "Ingress", "Gateway", "HTTPRoute"}, kinds


def test_every_ray_pod_gets_storage_credentials_from_the_service_account() -> None:
    (account,) = [d for d in all_docs() if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == SERVICE_ACCOUNT
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    for kind in ("RayJob", "RayService"):
        for name, template in pod_templates(only(kind)).items():
            if name == "submitter":
                continue  # only sends the job; reads no bucket
            assert template["spec"]["serviceAccountName"] == SERVICE_ACCOUNT, f"{kind} {name}"
            for container in template["spec"]["containers"]:
                refs = [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]
                # The static-key alternative is optional, so IRSA pods start without it.
                assert all(r.get("optional") is True for r in refs), f"{kind} {name}"
