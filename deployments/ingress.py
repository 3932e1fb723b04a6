"""Ingress deployment: FastAPI routes, request checks, the stage chain, readiness, metrics.

Every route goes through `_handle`, which does auth, the in-flight limit, the body limit, the
deadline, metrics and the one error map (deployments/errors.py). Validation happens here, before
any stage runs, so stages only ever see inputs they can process and a client's mistake never
reaches a replica as an exception.
"""

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from ray.serve.metrics import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.errors import (
    BodyTooLarge,
    MalformedBody,
    NotReady,
    Overloaded,
    RequestTimeout,
    Unauthorized,
    error_body,
    error_response,
    validation_error,
)
from deployments.schemas import EmbeddingsRequest, EmbedRequest, MatchRequest
from embedder.artifact import PROBE_MIN_COSINE, Artifact
from embedder.errors import InvalidInput, ModelMismatch
from embedder.probe import PROBE_TEXTS
from embedder.serving import (
    EmbedJob,
    JobResult,
    MicroBatcher,
    TokenPack,
    as_text_list,
    check_lengths,
    cut_matches,
    encode_base64,
    finish_pooled,
    probe_agreement,
    row_ranges,
    serving_config,
)

app = FastAPI(title="qmatch", docs_url=None, redoc_url=None)
PAGE = Path(__file__).with_name("static") / "index.html"
LATENCY_BUCKETS_MS = [2.0, 5, 10, 20, 30, 50, 75, 100, 200, 500, 1000, 2000, 5000]
OPEN_ROUTES = ("/health", "/ready", "/")


@app.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # 404 / 405 from routing get the same body shape as everything else.
    return JSONResponse(
        error_body(exc.status_code, "invalid_request_error", str(exc.detail), None), exc.status_code
    )


async def _resolve(value: Any) -> Any:
    return await value if isinstance(value, DeploymentResponse) else value


@serve.deployment
@serve.ingress(app)
class Ingress:
    """HTTP front door; holds handles to the stages of the chosen topology."""

    def __init__(
        self,
        artifact_dir: str,
        topology: str,
        encoder: DeploymentHandle,
        tokenizer: DeploymentHandle | None = None,
        pooling: DeploymentHandle | None = None,
        searcher: DeploymentHandle | None = None,
        serving: dict[str, Any] | None = None,
        model_name: str = "",
    ) -> None:
        self.model_name = model_name
        self.artifact = Artifact.load(artifact_dir)
        self.manifest = self.artifact.manifest
        self.fingerprint = self.artifact.fingerprint
        self.topology = topology
        self.encoder, self.tokenizer, self.pooling, self.searcher = encoder, tokenizer, pooling, searcher
        self.config = serving_config(serving)
        self.in_flight = 0
        self.ready = False
        self.not_ready_reason = "readiness probe has not run yet"
        self._probe_task: asyncio.Task[None] | None = None
        self._requests = Counter("qm_requests", "HTTP requests by route and status", ("route", "status"))  # type: ignore[arg-type]
        self._latency = Histogram("qm_request_latency_ms", "Request latency", LATENCY_BUCKETS_MS, ("route",))
        self.batcher = MicroBatcher(
            self._run_jobs,
            self.config.batch_parallel,
            self.config.batch_max_texts,
            size=lambda job: len(job.texts),
        )
        self._start_probe()

    def reconfigure(self, config: dict[str, Any] | None) -> None:
        """user_config: ServingConfig fields (limits, timeout, api_key) changed without a restart."""
        self.config = serving_config(config)
        if hasattr(self, "batcher"):
            self.batcher.max_parallel = self.config.batch_parallel
            self.batcher.max_items = self.config.batch_max_texts

    # ---- readiness -------------------------------------------------------------------------

    def _start_probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # constructed outside the event loop: the first request starts it
        if self._probe_task is None:
            self._probe_task = loop.create_task(self._probe_until_ready())

    async def _probe_until_ready(self) -> None:
        while not self.ready:
            try:
                await self._probe()
                self.ready = True
                self.not_ready_reason = ""
            except Exception as exc:  # any failure just means "not ready yet"; keep the reason
                self.not_ready_reason = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(self.config.probe_interval_s)

    async def _probe(self) -> None:
        served = (await self._embed(list(PROBE_TEXTS), True, None, None, "probe")).need_vectors()
        floor = PROBE_MIN_COSINE.get(self.manifest.precision, 0.99999)
        agreement = probe_agreement(self.artifact.probe_vectors, served)
        if agreement < floor:
            raise ModelMismatch(f"probe vectors through the graph agree to cosine {agreement:.6f} < {floor}")
        if self.searcher is not None:
            result = await self.searcher.search.remote(served[:1], 1, None)
            if "error" in result:
                raise NotReady(result["error"])
            if result["fingerprint"] != self.fingerprint:
                raise ModelMismatch(f"index fingerprint {result['fingerprint']} != model {self.fingerprint}")

    # ---- the stage chain -------------------------------------------------------------------

    async def _embed(
        self, texts: list[str], truncate: bool, normalize: bool | None, dimensions: int | None, field: str
    ) -> JobResult:
        """Vectors for one request (through the micro-batcher, so concurrent requests share hops)."""
        if dimensions is not None and dimensions > self.manifest.dimension:
            raise InvalidInput(f"dimensions must be at most {self.manifest.dimension}", field="dimensions")
        if self.topology == "fused" and normalize is False and self.manifest.normalize:
            raise InvalidInput(
                "normalize=false is not available: the model normalises inside its graph", "normalize"
            )
        result: JobResult = await self.batcher.submit(EmbedJob(texts, truncate, normalize, dimensions, field))
        return result

    async def _match(
        self, texts: list[str], top_k: int, min_score: float | None, truncate: bool
    ) -> JobResult:
        if self.searcher is None:
            raise NotReady("this service was started without an index; /match is unavailable")
        field = "question" if len(texts) == 1 else "questions"
        job = EmbedJob(texts, truncate, None, None, field, top_k=top_k, min_score=min_score)
        result: JobResult = await self.batcher.submit(job)
        return result

    async def _run_jobs(self, jobs: list[EmbedJob]) -> list[JobResult | Exception]:
        """One pass through the stages for a batch of requests; a bad job fails alone."""
        texts = [t for job in jobs for t in job.texts]
        ranges = row_ranges(jobs)
        if self.topology == "graph":
            assert self.tokenizer is not None and self.pooling is not None
            pack: TokenPack = await self.tokenizer.remote(texts)
            pooled = None
        else:
            pooled, pack = await self.encoder.remote(texts)
        out: list[JobResult | Exception] = [Exception("not run")] * len(jobs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for j, job in enumerate(jobs):
            a, b = ranges[j]
            try:
                check_lengths(pack.token_counts[a:b], self.manifest.max_seq_length, job.truncate, job.field)
            except InvalidInput as exc:
                out[j] = exc
                continue
            groups.setdefault(job.group, []).append(j)
        await asyncio.gather(
            *(self._run_group(jobs, members, ranges, pack, pooled, out) for members in groups.values())
        )
        return out

    async def _run_group(
        self,
        jobs: list[EmbedJob],
        members: list[int],
        ranges: list[tuple[int, int]],
        pack: TokenPack,
        pooled: np.ndarray | None,
        out: list[JobResult | Exception],
    ) -> None:
        first = jobs[members[0]]
        rows = np.concatenate([np.arange(*ranges[j]) for j in members])
        if pooled is None:
            assert self.pooling is not None
            sub = pack.select(rows)
            vectors: Any = self.pooling.remote(self.encoder.remote(sub), first.normalize, first.dimensions)
        else:
            vectors = finish_pooled(pooled[rows], first.dimensions, self.manifest.normalize)
        matches, version = None, None
        if first.top_k is not None:
            assert self.searcher is not None
            top_k = max(jobs[j].top_k or 1 for j in members)
            result = await self.searcher.search.remote(vectors, top_k, None)
            if "error" in result:
                exc: Exception = NotReady(result["error"], retry_after=self.config.retry_after_s)
                for j in members:
                    out[j] = exc
                return
            matches, version, vectors = result["matches"], result["index_version"], None
        else:
            vectors = await _resolve(vectors)
        start = 0
        for j in members:
            a, b = ranges[j]
            n = b - a
            job = jobs[j]
            own = None
            if matches is not None:
                own = [cut_matches(m, job.top_k or 1, job.min_score) for m in matches[start : start + n]]
            vec = None if vectors is None else vectors[start : start + n]
            out[j] = JobResult(vec, own, version, pack.lengths[a:b])
            start += n

    # ---- request plumbing ------------------------------------------------------------------

    async def _handle(
        self,
        request: Request,
        route: str,
        work: Callable[[dict[str, Any]], Awaitable[Any]],
        body: bool = True,
    ) -> Response:
        """Auth, in-flight limit, body limit, deadline, metrics and error mapping around `work`."""
        started = time.perf_counter()
        counted = False
        try:
            self._start_probe()
            self._check_key(request)
            if self.in_flight >= self.config.max_in_flight:
                raise Overloaded(
                    f"this replica is serving {self.in_flight} requests (limit {self.config.max_in_flight})",
                    retry_after=self.config.retry_after_s,
                )
            self.in_flight += 1
            counted = True
            payload = await self._read_json(request) if body else {}
            timeout = self._deadline(request)
            try:
                result = await asyncio.wait_for(work(payload), timeout)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"request did not finish within {timeout:g}s") from None
            response: Response = Response(json.dumps(result), media_type="application/json")
        except Exception as exc:
            response = error_response(exc)
        finally:
            if counted:
                self.in_flight -= 1
        self._requests.inc(tags={"route": route, "status": str(response.status_code)})
        self._latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})
        return response

    def _check_key(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise Unauthorized(
                "missing or wrong API key (send 'Authorization: Bearer <key>')", param="authorization"
            )

    def _deadline(self, request: Request) -> float:
        asked = request.headers.get("x-timeout-seconds")
        if asked is None:
            return self.config.request_timeout_s
        try:
            value = float(asked)
        except ValueError:
            raise MalformedBody("X-Timeout-Seconds must be a number", param="X-Timeout-Seconds") from None
        if not math.isfinite(value) or value <= 0:
            raise MalformedBody("X-Timeout-Seconds must be positive", param="X-Timeout-Seconds")
        return min(value, self.config.request_timeout_s)

    async def _read_json(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", param="body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body exceeds the limit of {limit} bytes", param="body")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedBody(f"body is not valid JSON: {exc}", param="body") from None
        if not isinstance(data, dict):
            raise MalformedBody("body must be a JSON object", param="body")
        return data

    @staticmethod
    def _parse(model: type[pydantic.BaseModel], body: dict[str, Any]) -> Any:
        try:
            return model.model_validate(body)
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None

    # ---- routes ----------------------------------------------------------------------------

    @app.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        """OpenAI-compatible embeddings."""

        async def work(body: dict[str, Any]) -> dict[str, Any]:
            req: EmbeddingsRequest = self._parse(EmbeddingsRequest, body)
            texts = as_text_list(req.input, "input", self.config.max_inputs)
            result = await self._embed(texts, True, None, req.dimensions, "input")
            vectors = result.need_vectors()
            as_b64 = req.encoding_format == "base64"
            data = [
                {"object": "embedding", "index": i, "embedding": encode_base64(v) if as_b64 else v.tolist()}
                for i, v in enumerate(vectors)
            ]
            tokens = int(result.lengths.sum())
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            return {"object": "list", "data": data, "model": self._model_name(), "usage": usage}

        return await self._handle(request, "/v1/embeddings", work)

    @app.post("/embed")
    async def embed(self, request: Request) -> Response:
        """text-embeddings-inference-style embeddings: a list of vectors."""

        async def work(body: dict[str, Any]) -> list[list[float]]:
            req: EmbedRequest = self._parse(EmbedRequest, body)
            texts = as_text_list(req.inputs, "inputs", self.config.max_inputs)
            result = await self._embed(texts, req.truncate, req.normalize, req.dimensions, "inputs")
            vectors: list[list[float]] = result.need_vectors().tolist()
            return vectors

        return await self._handle(request, "/embed", work)

    @app.post("/match")
    async def match(self, request: Request) -> Response:
        """Stored questions closest to the given question(s), with answers."""

        async def work(body: dict[str, Any]) -> dict[str, Any]:
            req: MatchRequest = self._parse(MatchRequest, body)
            if (req.question is None) == (req.questions is None):
                raise InvalidInput("send exactly one of 'question' or 'questions'", field="question")
            if not 1 <= req.top_k <= self.config.max_top_k:
                raise InvalidInput(f"top_k must be between 1 and {self.config.max_top_k}", field="top_k")
            if req.min_score is not None and not math.isfinite(req.min_score):
                raise InvalidInput("min_score must be a finite number", field="min_score")
            single = req.question is not None
            value = req.question if single else req.questions
            assert value is not None
            texts = as_text_list(value, "question" if single else "questions", self.config.max_inputs)
            result = await self._match(texts, req.top_k, req.min_score, req.truncate)
            meta = {"index_version": result.index_version, "model_fingerprint": self.fingerprint}
            if single:
                return {"matches": result.need_matches()[0], **meta}
            pairs = zip(texts, result.need_matches(), strict=True)
            return {"results": [{"question": q, "matches": m} for q, m in pairs], **meta}

        return await self._handle(request, "/match", work)

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        """The process is up (says nothing about the model)."""
        self._start_probe()
        return {"status": "ok"}

    @app.get("/ready")
    async def ready_route(self) -> JSONResponse:
        """200 once a probe went through the whole graph and matched the fingerprint, else 503."""
        self._start_probe()
        if self.ready:
            return JSONResponse({"ready": True, "model_fingerprint": self.fingerprint})
        body = error_body(503, "service_unavailable", f"not ready: {self.not_ready_reason}", None)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(self.config.retry_after_s)})

    @app.get("/info")
    async def info(self, request: Request) -> Response:
        """Model, topology, index version and size, and why an index was refused (if one was)."""

        async def work(_body: dict[str, Any]) -> dict[str, Any]:
            index = await self.searcher.info.remote() if self.searcher is not None else None
            m = self.manifest
            return {
                "model": self._model_name(),
                "model_fingerprint": self.fingerprint,
                "dimension": m.dimension,
                "max_seq_length": m.max_seq_length,
                "precision": m.precision,
                "pooling": m.pooling,
                "normalize": m.normalize,
                "topology": self.topology,
                "ready": self.ready,
                "not_ready_reason": None if self.ready else self.not_ready_reason,
                "index": index,
                "limits": {
                    "max_inputs": self.config.max_inputs,
                    "max_body_bytes": self.config.max_body_bytes,
                    "max_top_k": self.config.max_top_k,
                    "request_timeout_s": self.config.request_timeout_s,
                },
            }

        return await self._handle(request, "/info", work, body=False)

    @app.get("/")
    async def page(self) -> HTMLResponse:
        """A small page to type a question and see its matches."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    def _model_name(self) -> str:
        # The manifest's source_model is often a local path; the artifact directory names the model.
        return self.model_name or self.artifact.path.name
