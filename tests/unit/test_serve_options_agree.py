"""Serve's own limits are derived from the service config where the two must agree (a test, not a comment)."""

from __future__ import annotations

from deployments.app import AppArgs, deployment_options
from service.config import ServingConfig


def test_the_ingress_admits_more_than_the_service_so_the_service_answers_429_itself() -> None:
    for serving in ({}, {"max_in_flight": 1000}):
        args = AppArgs(artifact="a", serving=serving)
        cfg = ServingConfig(**serving)
        assert deployment_options("Ingress", args)["max_ongoing_requests"] > cfg.max_in_flight


def test_serves_retry_after_is_the_services() -> None:
    for serving in ({}, {"retry_after_s": 7}):
        args = AppArgs(artifact="a", serving=serving)
        for name in ("Ingress", "Backbone", "Searcher"):
            backpressure = deployment_options(name, args)["backpressure_config"]
            assert backpressure["retry_after_s"] == ServingConfig(**serving).retry_after_s
