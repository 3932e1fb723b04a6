"""The Serve app's models (`artifact`, `models`, `default_model`) resolved and refused in build_app, Ray-free."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deployments.app import AppArgs, build_app, inline_sections
from deployments.app_models import model_plans, replica_plans
from deployments.app_settings import AppArgsError
from embedder.artifact import Artifact


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


def test_fused_with_several_models_multiplexes_and_checks_each_collection_with_its_model(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    args = {
        "artifact": str(tiny_artifact),
        "model_name": "tiny",
        "models": {"e5": str(prompted_artifact)},
        "collections": {"help": {"index": str(tiny_artifact.parent), "model": "e5"}},
        "topology": "fused",
        "max_models_per_replica": 1,
    }
    ingress = build_app(args)._bound_deployment
    encoder = ingress.init_kwargs["handles"]["encoder"]._bound_deployment
    assert encoder.name == "FusedEncoder"  # the same `deployments:` key as one model's
    assert encoder.init_args == (1, 0)  # N and the budget: the models travel in the Ingress's user_config
    assert [p.name for p in ingress.init_kwargs["models"]] == ["tiny"]
    user_config = ingress._deployment_config.user_config
    assert list(user_config["models"]) == ["e5"] and user_config["collection_models"] == {"help": "e5"}
    searcher = ingress.init_kwargs["handles"]["searcher"]._bound_deployment
    checks = searcher.init_args[3]  # each model's fingerprint: a collection is checked against its own
    assert checks["e5"][0] == Artifact.load(prompted_artifact).fingerprint
    assert checks["tiny"][0] == Artifact.load(tiny_artifact).fingerprint


def test_build_app_binds_the_default_model_and_puts_the_others_in_user_config(
    tiny_artifact: Path, prompted_artifact: Path
) -> None:
    args = {
        "artifact": str(tiny_artifact),
        "model_name": "tiny",
        "models": {"e5": {"artifact": str(prompted_artifact), "batching": {"pass_tokens": 1024}}},
        "collections": {"help": {"index": str(tiny_artifact.parent), "model": "e5"}},
        "topology": "inline",
    }
    app = build_app(args)
    bound = app._bound_deployment  # what Serve will construct each Ingress replica with
    assert [p.name for p in bound.init_kwargs["models"]] == ["tiny"]
    user_config = bound._deployment_config.user_config
    assert user_config["collections"]["collections"]["help"]["model"] == "e5"
    # What the replica rebuilds from user_config is the plan build_app resolved, field for field.
    session, batching = inline_sections(AppArgs.model_validate(args))  # the inline CPU layout
    plans = model_plans(str(tiny_artifact), "tiny", args["models"], None, session, batching)
    rebuilt = replica_plans(user_config["models"], plans[0], plans[0].session, plans[0].batching)
    assert rebuilt["e5"] == dataclasses.replace(plans[1], fingerprint="")
    assert rebuilt["e5"].batching.pass_tokens == 1024


def test_a_user_config_model_entry_is_refused_naming_it(tiny_artifact: Path) -> None:
    plan = model_plans(str(tiny_artifact), "tiny", {}, None, None, None)[0]
    with pytest.raises(ValueError, match="models.tiny: 'tiny' is the default model"):
        replica_plans({"tiny": str(tiny_artifact)}, plan, plan.session, plan.batching)
    with pytest.raises(ValueError, match="models.e5: .*threads"):
        replica_plans(
            {"e5": {"artifact": "x", "session": {"threads": "many"}}}, plan, plan.session, plan.batching
        )
