"""OpenVINO sessions (CPU): the same ONNX graph in fp32 or bf16, behind the session interface.

OpenVINO's ONNX frontend reads the artifact's model.onnx as exported, including onnxruntime's
fused com.microsoft ops (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu):
measured on all-MiniLM-L6-v2, OpenVINO f32 on the fused graph gives cosine 0.99999996 to the
stored probe vectors, so no second, unfused graph is kept in the artifact
(tests/unit/test_openvino_session.py checks this on every run where openvino is installed).
"""

from __future__ import annotations

import os
import queue
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
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", props)
        except Exception as exc:  # OpenVINO raises RuntimeError with the frontend's message
            raise ArtifactError(f"OpenVINO cannot load {path}: {exc}") from exc
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        reported = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        # What actually runs: on a CPU without bf16 units OpenVINO may keep f32 whatever we ask.
        self.precision = "int8" if precision == "int8" else _REPORTED.get(reported, reported)
        self.placement: dict[str, dict[str, int]] = {}
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()

    @property
    def providers(self) -> tuple[str, ...]:
        """The device OpenVINO executes on."""
        return ("OpenVINO:CPU",)

    def _borrow(self) -> Any:
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            with self._lock:  # create_infer_request is cheap but not documented as thread-safe
                return self.compiled.create_infer_request()

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference; outputs are copies (the request's buffers are reused by the next caller)."""
        request = self._borrow()
        try:
            result = request.infer(feeds, share_inputs=False, share_outputs=False)
            return [np.asarray(result[self.compiled.output(name)]) for name in output_names]
        finally:
            self._requests.put(request)
