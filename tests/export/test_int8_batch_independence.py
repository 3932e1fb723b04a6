"""int8 vectors must not depend on which other texts share the batch (offline == online).

Dynamic int8 computed activation scales per batch (padding included): the same text alone and
inside a mixed batch differed down to cosine ~0.95. The static scheme fixes every scale in the
graph, so a text's vector is the same in any batch, up to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedder import Encoder
from embedder.config import BatchConfig
from embedder.encoder import cosine_rows
from export import quantize
from export.texts import PARITY_TEXTS
from testkit.varied_texts import VARIED


def test_calibration_texts_are_disjoint_from_the_measured_sets() -> None:
    calibration = set(quantize.CALIBRATION_TEXTS)
    assert not calibration & set(VARIED), "calibration must not see the held-out set"
    assert not calibration & set(PARITY_TEXTS), "calibration must not see the export's parity set"


def _toy_ffn(path: Path, rng: np.random.Generator) -> None:
    """x -> MatMul -> Gelu -> MatMul, hidden 128 / 256, as a fused transformer's FFN looks."""
    up = rng.standard_normal((128, 256)).astype(np.float32) * 0.1
    down = rng.standard_normal((256, 128)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "up"], ["h"], name="up"),
        helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["g", "down"], ["y"], name="down"),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 128])],
        [numpy_helper.from_array(up, "up"), numpy_helper.from_array(down, "down")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize(
    "split", [(), (quantize.FFN_INPUT,)], ids=["smoothing-only", "outlier-channel-in-fp32"]
)
def test_static_int8_is_close_to_fp32_and_row_independent(tmp_path: Path, split: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    _toy_ffn(src, rng)
    kinds = [t.kind for t in quantize.find_targets(onnx.load(str(src)).graph)]
    assert kinds == [quantize.FFN_INPUT, quantize.FFN_OUTPUT]

    def sample(n: int) -> np.ndarray:
        x = rng.standard_normal((n, 8, 128)).astype(np.float32)
        x[..., 5] *= 12  # one outlier channel, as LayerNorm outputs have
        return x

    ranges = quantize.calibrate(src, [{"x": sample(4)} for _ in range(8)])
    done = quantize.quantize(src, dst, ranges, quantize.Int8Scheme(outlier_kinds=split))
    assert done["quantized_nodes"] == {quantize.FFN_INPUT: 1, quantize.FFN_OUTPUT: 1}
    assert done["fp32_outlier_channels"] == ({"up": 1} if split else {})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    fp32 = ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    x = sample(6)
    (expected,) = fp32.run(None, {"x": x})
    (batched,) = int8.run(None, {"x": x})
    assert cosine_rows(expected.reshape(-1, 128), batched.reshape(-1, 128)).min() >= 0.99
    alone = np.concatenate([int8.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    assert np.abs(alone - batched).max() <= 1e-5  # static scales: a row does not see its neighbours


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch",
    [
        # Every text in one padded batch (3 to 256 tokens side by side).
        BatchConfig(batch_tokens=len(VARIED) * 256, max_batch_size=len(VARIED), call_overhead_tokens=10**6),
        BatchConfig(),  # the Encoder's default plan (what a Serve pass or a bulk job does)
    ],
    ids=["one-mixed-batch", "default-batches"],
)
def test_int8_vector_is_the_same_alone_and_in_a_mixed_batch(
    minilm_int8_artifact: Path, batch: BatchConfig
) -> None:
    artifact = minilm_int8_artifact
    alone_encoder = Encoder.load(artifact, threads=1)
    alone = np.concatenate([alone_encoder.encode([text]) for text in VARIED])
    together = Encoder.load(artifact, threads=1, batch=batch).encode(VARIED)
    cos = cosine_rows(alone, together)
    worst = int(cos.argmin())
    assert cos.min() >= 0.999, (
        f"text #{worst} {VARIED[worst][:30]!r}: cosine {cos.min():.6f} alone vs batched"
    )
    assert np.abs(alone - together).max() <= 1e-5  # identical up to float rounding


@pytest.mark.slow
def test_int8_query_vector_does_not_change_with_its_companions(minilm_int8_artifact: Path) -> None:
    encoder = Encoder.load(minilm_int8_artifact, threads=1)
    one_batch = BatchConfig(batch_tokens=64 * 256, max_batch_size=64, call_overhead_tokens=10**6)
    mixed = Encoder.load(minilm_int8_artifact, threads=1, batch=one_batch)
    query = "How do I cancel my gym membership?"
    alone = encoder.encode([query])[0]
    for companions in (["ok"], ["🙂", VARIED[29]], list(VARIED[10:20]), [VARIED[29]] * 3):
        inside = mixed.encode([*companions, query])[-1]
        assert float(np.dot(alone, inside)) >= 0.999
        assert np.abs(alone - inside).max() <= 1e-5
