"""The Serve app's models (`artifact`, `models`, `default_model`) resolved and refused in build_app, Ray-free."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.app import build_app
from deployments.app_models import model_plans
from deployments.app_settings import AppArgsError


def test_the_artifact_arg_alone_is_the_one_model(tiny_artifact: Path) -> None:
    (plan,) = model_plans(str(tiny_artifact), "tiny", {}, None, None, None)
    assert plan.name == "tiny" and plan.artifact_dir == str(tiny_artifact.resolve())


def test_the_artifact_model_is_the_default_unless_default_model_names_another(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    models = {"e5": {"artifact": str(prompted_artifact), "session": {"threads": 1}}}
    plans = model_plans(str(tiny_artifact), "tiny", models, None, {"threads": 2}, None)
    assert [p.name for p in plans] == ["tiny", "e5"]
    assert plans[0].session.threads == 2 and plans[1].session.threads == 1  # the model's key on top
    assert plans[0].fingerprint != plans[1].fingerprint
    chosen = model_plans(str(tiny_artifact), "tiny", models, "e5", None, None)
    assert [p.name for p in chosen] == ["e5", "tiny"]
    alone = model_plans(None, "", {"b": str(prompted_artifact), "a": str(tiny_artifact)}, None, None, None)
    assert [p.name for p in alone] == ["b", "a"]  # without `artifact`, the first of `models`


@pytest.mark.parametrize(
    ("models", "default", "named"),
    [
        ({"tiny": "ART2"}, None, "models.tiny: the name is already the `artifact` model's"),
        ({"e5": "ART2"}, "nope", "default_model 'nope' is not one of the models ['tiny', 'e5']"),
        ({"e5": {"artifact": "ART2", "sesion": {}}}, None, "models.e5: give an artifact URI"),
        ({"e5": {"artifact": "ART2", "session": {"thraeds": 1}}}, None, "models.e5.session: SessionConfig"),
        ({"e5": "no-such-artifact"}, None, "models.e5: "),
    ],
)
def test_a_bad_models_arg_fails_in_one_line_naming_it(
    tiny_artifact: Path, prompted_artifact: Path, models: dict, default: str | None, named: str
) -> None:
    models = {
        k: (str(prompted_artifact) if v == "ART2" else v)
        if isinstance(v, str)
        else {**v, "artifact": str(prompted_artifact)}
        for k, v in models.items()
    }
    with pytest.raises(AppArgsError) as err:
        model_plans(str(tiny_artifact), "tiny", models, default, None, None)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_build_app_refuses_a_collection_naming_a_model_not_served(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    args = {
        "artifact": str(tiny_artifact),
        "model_name": "tiny",
        "collections": {"help": {"index": str(tmp_path), "model": "e5"}},
    }
    with pytest.raises(
        AppArgsError, match=r"^build_app: collections.help: model 'e5' is not served \(models: tiny\)$"
    ):
        build_app(args)


def test_build_app_refuses_several_models_in_the_graph_topology(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    args = {"artifact": str(tiny_artifact), "models": {"e5": str(prompted_artifact)}, "topology": "graph"}
    with pytest.raises(AppArgsError, match="topology 'graph' serves one model.*use topology 'inline'"):
        build_app(args)


def test_fused_with_several_models_multiplexes_and_refuses_a_collection_of_another_model(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    args = {
        "artifact": str(tiny_artifact),
        "model_name": "tiny",
        "models": {"e5": str(prompted_artifact)},
        "topology": "fused",
        "max_models_per_replica": 1,
    }
    ingress = build_app(args)._bound_deployment
    encoder = ingress.init_kwargs["handles"]["encoder"]._bound_deployment
    assert encoder.name == "FusedEncoder"  # the same `deployments:` key as one model's
    assert [p.name for p in encoder.init_args[0]] == ["tiny", "e5"] and encoder.init_args[1] == 1
    bad = {**args, "collections": {"help": {"index": str(tiny_artifact.parent), "model": "e5"}}}
    with pytest.raises(AppArgsError, match="collections.help: topology 'fused' with several models"):
        build_app(bad)


def test_build_app_binds_every_model_to_the_inline_ingress(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    args = {
        "artifact": str(tiny_artifact),
        "model_name": "tiny",
        "models": {"e5": str(prompted_artifact)},
        "collections": {"help": {"index": str(tiny_artifact.parent), "model": "e5"}},
        "topology": "inline",
    }
    app = build_app(args)
    bound = app._bound_deployment  # what Serve will construct each Ingress replica with
    assert [p.name for p in bound.init_kwargs["models"]] == ["tiny", "e5"]
    assert bound._deployment_config.user_config["collections"]["collections"]["help"]["model"] == "e5"
