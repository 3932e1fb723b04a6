"""OpenVINO sessions (CPU): the same ONNX graph in fp32 or bf16, behind the session interface.

OpenVINO's ONNX frontend reads the artifact's model.onnx as exported, including onnxruntime's
fused com.microsoft ops (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu):
measured on all-MiniLM-L6-v2, OpenVINO f32 on the fused graph gives cosine 0.99999996 to the
stored probe vectors, so no second, unfused graph is kept in the artifact
(tests/unit/test_openvino_session.py checks this on every run where openvino is installed).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import SessionConfig
from embedder.errors import ArtifactError, ProviderUnavailable

# OpenVINO's names for the precisions we ask for and what it reports back. An int8 artifact
# carries its quantization in the graph (QuantizeLinear/DequantizeLinear): OpenVINO runs those
# parts with its int8 kernels (VNNI / AMX-INT8) and keeps the rest in f32.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_REPORTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def streams_for(threads: int) -> int:
    """OpenVINO streams so that `threads` means what it means for onnxruntime: threads per pass.

    onnxruntime runs concurrent calls side by side, each on `threads` intra-op threads (the Serve
    inline layout: two 1-thread passes on 2 cores). OpenVINO runs one call per stream at a time,
    so one stream would queue the second pass behind the first: give it one stream per `threads`
    cores. threads 0 (all cores for one pass): one stream.
    """
    if threads <= 0:
        return 1
    return max(1, (os.cpu_count() or 1) // threads)


def copies_for(concurrent_runs: int, streams: int) -> int:
    """Compiled copies of the model so that `concurrent_runs` calls run at once, each on its full
    thread count: a stream runs one call at a time and OpenVINO caps one compiled model's threads
    at the cores (2 streams on 2 cores get one thread each, however many are asked for), so two
    full-thread calls need two compiled models (measured on 2 cores, bf16 MiniLM: a question
    beside a 1,024-token call 50 ms on one stream, 3-10 ms on its own copy; +72 MiB RSS a copy).
    """
    return max(1, -(-max(1, concurrent_runs) // streams))


class OpenVinoSession:
    """A compiled OpenVINO model plus a pool of infer requests (one per concurrent caller).

    An InferRequest is not thread-safe, while callers (the Serve scheduler's workers) run passes
    side by side, so each run() borrows a request from the pool and returns it.
    """

    backend = "openvino"

    def __init__(self, path: Path, config: SessionConfig, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ProviderUnavailable(
                "backend openvino is not installed: pip install '.[openvino]'"
            ) from None
        if not path.is_file():
            raise ArtifactError(f"ONNX model {path} does not exist")
        if precision not in _HINTS:
            raise ProviderUnavailable(f"OpenVINO runs fp32, bf16 or an int8 artifact here, not {precision}")
        core = ov.Core()
        streams = streams_for(config.threads)
        props: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": str(streams),
            # Compiled kernels are cached per input shape; bounded so RSS stays flat when a
            # server sees every (batch, length) pair (OpenVINO's default keeps 5000).
            "CPU_RUNTIME_CACHE_CAPACITY": str(config.openvino_shape_cache),
        }
        if config.threads:
            props["INFERENCE_NUM_THREADS"] = str(config.threads * streams)
        try:
            model = core.read_model(str(path))
            copies = copies_for(config.concurrent_runs, streams)
            self.copies = [core.compile_model(model, "CPU", props) for _ in range(copies)]
        except Exception as exc:  # OpenVINO raises RuntimeError with the frontend's message
            raise ArtifactError(f"OpenVINO cannot load {path}: {exc}") from exc
        self.compiled = self.copies[0]
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        reported = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        # What actually runs: on a CPU without bf16 units OpenVINO may keep f32 whatever we ask.
        self.precision = "int8" if precision == "int8" else _REPORTED.get(reported, reported)
        self.placement: dict[str, dict[str, int]] = {}
        # Per copy: its idle infer requests and how many calls it runs now. A call goes to the
        # least busy copy, so concurrent passes land on different copies' threads.
        self._idle: list[list[Any]] = [[] for _ in self.copies]
        self._running = [0] * len(self.copies)
        self._lock = threading.Lock()

    @property
    def providers(self) -> tuple[str, ...]:
        """The device OpenVINO executes on."""
        return ("OpenVINO:CPU",)

    def _borrow(self) -> tuple[int, Any]:
        with self._lock:  # create_infer_request is cheap but not documented as thread-safe
            k = min(range(len(self.copies)), key=self._running.__getitem__)
            self._running[k] += 1
            idle = self._idle[k]
            return k, idle.pop() if idle else self.copies[k].create_infer_request()

    def _give_back(self, k: int, request: Any) -> None:
        with self._lock:
            self._running[k] -= 1
            self._idle[k].append(request)

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference; outputs are copies (the request's buffers are reused by the next caller)."""
        k, request = self._borrow()
        try:
            result = request.infer(feeds, share_inputs=False, share_outputs=False)
            return [np.asarray(result[self.copies[k].output(name)]) for name in output_names]
        finally:
            self._give_back(k, request)
