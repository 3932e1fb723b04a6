"""int8 with static, per-channel activation scales: a text's vector does not depend on its batch.

Why not dynamic quantization (what this module did before): onnxruntime's dynamic int8 computes
one activation scale per tensor per call, i.e. over every token of every text in the batch,
padding included. A text's vector then changes with its batch companions (measured on
all-MiniLM-L6-v2: cosine down to 0.95 between the same text alone and in a mixed batch) and its
held-out min cosine to sentence-transformers stayed at ~0.96. bench/results/int8_study.json has the numbers
(the study's code is archived: docs/benchmarks.md).

The scheme (every scale is a constant of the graph, so batch independence holds by construction;
padding rows are quantized too but never mix with real tokens: MatMuls are row-wise and the
attention mask drops padded keys):

1. Calibrate: run the fp32 graph on CALIBRATION_TEXTS one text at a time (no padding) and record,
   for the input of every MatMul / Attention with constant weights, each channel's min and max
   over real tokens.
2. Per input channel j, a static scale a_j and zero point z_j (8-bit, asymmetric, centred so
   held-out values slightly outside the calibrated range still fit). a_j is proportional to
   range_j ** alpha (SmoothQuant-style migration: alpha 0 is one scale per tensor, 1 is a full
   per-channel scale); the per-channel factor is folded into the weights, W'_jk = a_j W_jk,
   which are then quantized per output column. The integer product is exact, so
   y_k = w_k * sum_j q_j P_jk - w_k * sum_j z_j P_jk, the second term a constant bias.
   Graph: x -> Mul(1/a) -> Add(z) -> QuantizeLinear -> MatMulIntegerToFloat (or QAttention).
3. Outlier channels: GELU outputs (the FFN-output MatMul's input) of the first four layers have
   one or two channels 2-4x larger than any other (up to ~25 where the rest stay under ~7;
   LayerNorm outputs feeding the FFN have such channels too). Input channels of FFN-output
   MatMuls whose calibrated max |x| exceeds `outlier_ratio` x the 99th percentile of channel
   maxima are computed in fp32 (Gather + a K=1-2 MatMul + Add), the rest in int8 (LLM.int8()-
   style decomposition). Splitting FFN inputs too measured no better and adds six fp32 paths.
4. Weights use 7 bits ([-63, 63]): on AVX2 without VNNI, onnxruntime's u8s8 kernels add pairs of
   u8 x s8 products in saturating int16 (vpmaddubsw); 255 * 63 * 2 < 32767, so no product can
   saturate and the integer results are exact on every x86 CPU (AVX2, AVX-512, VNNI, AMX).
   8-bit weights measured slightly better here but saturate on AVX2, so vectors would then
   differ between CPU generations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from export.quantize_targets import (
    ATTENTION_OUTPUT,
    ATTENTION_QKV,
    FFN_INPUT,
    FFN_OUTPUT,
    OTHER,
    find_targets,
)


@dataclass(frozen=True)
class Int8Scheme:
    """Static int8 settings; the defaults are the ones measured best on all-MiniLM-L6-v2."""

    weight_bits: int = 7
    # Migration strength per node kind: 0 = one activation scale per tensor, 1 = one per channel.
    alpha: dict[str, float] = field(
        default_factory=lambda: {
            ATTENTION_QKV: 0.5,
            ATTENTION_OUTPUT: 0.0,
            FFN_INPUT: 0.5,
            FFN_OUTPUT: 0.25,
            OTHER: 0.5,
        }
    )
    # Input channels above this multiple of the 99th percentile of channel maxima stay fp32 ...
    outlier_ratio: float = 2.0
    # ... for these kinds of MatMul.
    outlier_kinds: tuple[str, ...] = (FFN_OUTPUT,)
    # Node names left in fp32 (none by default).
    fp32_nodes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The settings, for the manifest."""
        return {
            "weight_bits": self.weight_bits,
            "activation_bits": 8,
            "alpha": dict(self.alpha),
            "outlier_ratio": self.outlier_ratio,
            "outlier_kinds": list(self.outlier_kinds),
            "fp32_nodes": list(self.fp32_nodes),
        }


@dataclass(frozen=True)
class ChannelRange:
    """Per-channel min and max of one activation tensor over the calibration tokens."""

    lo: np.ndarray
    hi: np.ndarray
    tokens: int


def calibrate(model_path: Path, feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, ChannelRange]:
    """Per-channel min/max of every target's input, over the real (unmasked) tokens of `feeds`."""
    model = onnx.load(str(model_path))
    names = sorted({t.activation for t in find_targets(model.graph)})
    if not names:
        return {}
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    tokens = 0
    for feed in feeds:
        mask = feed.get("attention_mask")
        real = None if mask is None else np.asarray(mask).reshape(-1).astype(bool)
        count = 0
        for name, value in zip(names, session.run(names, dict(feed)), strict=True):
            rows = np.asarray(value).reshape(-1, value.shape[-1])
            rows = rows if real is None else rows[real]
            lo[name] = np.minimum(lo[name], rows.min(0)) if name in lo else rows.min(0)
            hi[name] = np.maximum(hi[name], rows.max(0)) if name in hi else rows.max(0)
            count = len(rows)
        tokens += count
    if not tokens:
        raise ValueError("calibration saw no tokens")
    # Zero stays representable exactly (padding rows, ReLU-like channels).
    return {
        n: ChannelRange(
            np.minimum(lo[n], 0).astype(np.float64), np.maximum(hi[n], 0).astype(np.float64), tokens
        )
        for n in names
    }


def outlier_channels(rng: ChannelRange, ratio: float) -> np.ndarray:
    """Channels whose calibrated max |x| exceeds `ratio` x the 99th percentile of channel maxima."""
    peak = np.maximum(-rng.lo, rng.hi)
    return np.flatnonzero(peak > ratio * np.percentile(peak, 99))


def activation_grid(rng: ChannelRange, alpha: float, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel scale a (float64) and zero point z (0..255) of the static u8 activation grid."""
    width = np.maximum(rng.hi - rng.lo, 1e-6)
    if len(exclude):  # channels computed in fp32 do not shape the int8 grid
        width[exclude] = np.median(width)
    scale = width**alpha * (np.max(width ** (1 - alpha)) / 255.0)
    levels = width / scale  # <= 255; centre the calibrated range in the grid, headroom both sides
    zero = np.clip(np.round((255.0 - levels) / 2 - rng.lo / scale), 0, 255)
    if len(exclude):
        scale[exclude], zero[exclude] = 1.0, 0.0
    return scale, zero


def quantize_weights(weights: np.ndarray, scale: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """diag(scale) @ weights, symmetric per output column: (int values, column scales)."""
    limit = 2 ** (bits - 1) - 1
    folded = weights.astype(np.float64) * scale[:, None]
    column = np.maximum(np.abs(folded).max(0), 1e-12) / limit
    return np.clip(np.round(folded / column), -limit, limit), column


def quantize(
    in_path: Path, out_path: Path, ranges: Mapping[str, ChannelRange], scheme: Int8Scheme | None = None
) -> dict[str, Any]:
    """Write the static int8 graph; returns what was done (node counts per kind, fp32 outlier channels)."""
    scheme = scheme or Int8Scheme()
    model = onnx.load(str(in_path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    targets = {t.node.output[0]: t for t in find_targets(graph)}  # outputs are unique
    new_init: list[onnx.TensorProto] = []
    dropped: set[str] = set()
    quantized_inputs: dict[tuple[str, float, tuple[int, ...]], tuple[str, np.ndarray, np.ndarray]] = {}
    nodes: list[onnx.NodeProto] = []
    counts: dict[str, int] = {}
    outliers: dict[str, int] = {}

    def const(name: str, value: np.ndarray) -> str:
        new_init.append(numpy_helper.from_array(value, name))
        return name

    def quantized_input(x: str, alpha: float, exclude: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
        key = (x, alpha, tuple(int(i) for i in exclude))
        if key not in quantized_inputs:
            scale, zero = activation_grid(ranges[x], alpha, exclude)
            tag = f"{x}_i8_{len(quantized_inputs)}"
            nodes.extend(
                [
                    helper.make_node(
                        "Mul", [x, const(tag + "_inv_scale", (1 / scale).astype(np.float32))], [tag + "_s"]
                    ),
                    helper.make_node(
                        "Add", [tag + "_s", const(tag + "_zero", zero.astype(np.float32))], [tag + "_z"]
                    ),
                    helper.make_node(
                        "QuantizeLinear",
                        [
                            tag + "_z",
                            const(tag + "_one", np.array(1.0, np.float32)),
                            const(tag + "_u8", np.array(0, np.uint8)),
                        ],
                        [tag + "_q"],
                    ),
                ]
            )
            quantized_inputs[key] = (tag + "_q", scale, zero)
        return quantized_inputs[key]

    for node in graph.node:
        target = targets.get(node.output[0])
        if target is None or node.name in scheme.fp32_nodes:
            nodes.append(node)
            continue
        x, w_name = target.activation, target.weight
        weight = numpy_helper.to_array(weights[w_name]).astype(np.float64)
        split = np.array([], dtype=np.int64)
        if target.kind in scheme.outlier_kinds and node.op_type == "MatMul":
            split = outlier_channels(ranges[x], scheme.outlier_ratio)
        q_name, scale, zero = quantized_input(x, scheme.alpha.get(target.kind, scheme.alpha[OTHER]), split)
        int8_part = weight.copy()
        int8_part[split] = 0  # those channels go through fp32 below
        ints, column = quantize_weights(int8_part, scale, scheme.weight_bits)
        correction = column * (zero @ ints)  # w_k * sum_j z_j P_jk
        base = (node.name or w_name) + "_i8"
        w_q = const(base + "_w", ints.astype(np.int8))
        w_scale = const(base + "_w_scale", column.astype(np.float32))
        one = const(base + "_one", np.array(1.0, np.float32))
        dropped.add(w_name)
        counts[target.kind] = counts.get(target.kind, 0) + 1
        if node.op_type == "MatMul":
            out = list(node.output) if not len(split) else [base + "_int"]
            bias = const(base + "_bias", (-correction).astype(np.float32))
            nodes.append(
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [q_name, w_q, one, w_scale, "", "", bias],
                    out,
                    domain="com.microsoft",
                    name=base,
                )
            )
            if len(split):
                outliers[node.name] = len(split)
                picked = const(base + "_outlier_idx", split.astype(np.int64))
                rows = const(base + "_outlier_w", weight[split].astype(np.float32))
                nodes.extend(
                    [
                        helper.make_node("Gather", [x, picked], [base + "_outlier_x"], axis=-1),
                        helper.make_node("MatMul", [base + "_outlier_x", rows], [base + "_outlier_y"]),
                        helper.make_node("Add", [base + "_int", base + "_outlier_y"], list(node.output)),
                    ]
                )
        else:  # Attention -> QAttention: input scale 1 / zero point 0 (the grid is folded into weights and bias)
            bias_name = node.input[2]
            dropped.add(bias_name)
            bias = numpy_helper.to_array(weights[bias_name]).astype(np.float64) - correction
            mask = node.input[3] if len(node.input) > 3 else ""
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            inputs = [
                q_name,
                w_q,
                const(base + "_bias", bias.astype(np.float32)),
                one,
                w_scale,
                mask,
                const(base + "_x_zero", np.array(0, np.uint8)),
                const(base + "_w_zero", np.zeros(ints.shape[1], np.int8)),
            ]
            nodes.append(
                helper.make_node(
                    "QAttention", inputs, list(node.output), domain="com.microsoft", name=base, **attrs
                )
            )
    still_used = {name for n in nodes for name in n.input}
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_init)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out_path))
    return {"quantized_nodes": counts, "fp32_outlier_channels": outliers}


# Calibration text: varied like real traffic (short, long, many scripts, emoji, code, numbers),
# and disjoint from both export/texts.py (the export's parity set) and the tests' held-out set.
_LONG_CALIBRATION = (
    "The committee reviewed the proposal in detail and, after a long discussion about costs, risks "
    "and the expected benefits for customers in rural areas, decided to postpone the final vote "
    "until the next quarterly meeting so that more data could be collected.",
    "When I open the app on my tablet it shows a blank white screen for about ten seconds, then it "
    "crashes back to the home screen; I have reinstalled it twice, cleared the cache, restarted the "
    "device and checked for system updates, but nothing has changed since last Tuesday.",
    (
        "The museum opens at nine in the morning and closes at six in the evening, except on public holidays. "
        * 8
    ).strip(),
    ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 12).strip(),
    ("数据 " * 150).strip(),
    ("ok " * 260).strip(),
    ("Shipping 🚚 delayed again " * 40).strip(),
    ("¿Dónde está mi paquete? " * 30).strip(),
)

CALIBRATION_TEXTS: tuple[str, ...] = (
    "thanks",
    "help",
    "ok",
    "Bonjour",
    "👋",
    "🔥🔥",
    "??",
    "x",
    "Account locked",
    "shipping cost",
    "Where do I enter a promo code at checkout?",
    "How do I update the email address on my profile?",
    "Why was my card declined even though I have enough money?",
    "Can I change the delivery date after placing an order?",
    "Is there a limit on how many devices can use one subscription?",
    "What happens to my files if I downgrade to the free plan?",
    "How can I download all of my past invoices at once?",
    "The tracking number says delivered but I never got the parcel.",
    "Do you have a phone number I can call instead of using chat?",
    "I forgot which email I used to sign up, how can I recover my account?",
    "How do plants turn sunlight into sugar?",
    "What causes the tides in the ocean?",
    "Who painted the ceiling of the Sistine Chapel?",
    "How long should I boil an egg for a soft yolk?",
    "What is the difference between weather and climate?",
    "Is it better to rent or buy a house when interest rates are high?",
    "How do I stop my bike chain from slipping?",
    "Why do onions make people cry when they are cut?",
    "What is a good stretching routine before running?",
    "How does a refrigerator keep food cold?",
    "Write a SQL query that returns the ten most recent orders per customer.",
    "What does `git rebase --onto` actually do?",
    "TypeError: 'NoneType' object is not subscriptable — what does it mean?",
    "for i in range(10): print(i ** 2)",
    "How do I center a div horizontally and vertically with CSS grid?",
    "Difference between TCP and UDP for a multiplayer game?",
    "ERROR 1045 (28000): Access denied for user 'root'@'localhost'",
    "How do I set JAVA_HOME on macOS Sonoma?",
    "Order 98-7731-X shipped on 2024-03-02, ETA 5-7 business days",
    "Total: €49.99 + €4.50 shipping = €54.49",
    "Call +1 (555) 010-2233 between 9am and 5pm EST",
    "Version 2.10.3 fixes CVE-2023-12345 and adds ARM64 builds",
    "50% off!!! Only today!!! Don't miss it!!!",
    "why doesnt my wifi work after the update??",
    "HOW DO I TURN OFF NOTIFICATIONS",
    "pls send refund asap thx",
    "my son broke the screen can it be fixed under warranty or not",
    "¿Puedo cambiar la dirección de entrega después de pagar?",
    "¿Por qué mi pedido todavía no ha llegado?",
    "Comment changer mon mot de passe sur l'application mobile ?",
    "Est-ce que la livraison est gratuite en Belgique ?",
    "Kann ich meine Bestellung noch ändern, nachdem sie versendet wurde?",
    "Wie lange dauert eine Rückerstattung normalerweise?",
    "Posso pagare in contanti alla consegna?",
    "Quanto tempo leva a entrega para Lisboa?",
    "Hoe kan ik mijn abonnement opzeggen?",
    "Jak mogę zmienić adres e-mail?",
    "Как отменить подписку на сервис?",
    "Почему приложение не открывается на телефоне?",
    "Nasıl şifremi sıfırlayabilirim?",
    "كم تستغرق عملية الشحن إلى دبي؟",
    "איך אני מבטל את ההזמנה שלי?",
    "मैं अपना पासवर्ड कैसे बदलूं?",
    "Làm thế nào để đổi mật khẩu?",
    "รหัสผ่านของฉันหายไป ต้องทำอย่างไร",
    "这个手机壳适合哪些型号？",
    "请问周末可以送货吗？",
    "退款需要多长时间才能到账？",
    "我忘记了登录邮箱怎么办",
    "配送料はいくらですか？",
    "注文をキャンセルしたいのですが、どうすればいいですか？",
    "パスワードを忘れました",
    "환불은 언제 처리되나요?",
    "이 제품은 한국으로 배송되나요?",
    "Can I use 支付宝 to pay for the order?",
    "The Wi-Fi password is 'Café-2024' but it doesn't connect 😤",
    "Great service 😍👏 will order again 🛒",
    "📦❓",
    "🤔🤔🤔 why is it so expensive",
    "I'm so happy with the results 😂😂 thank you!!",
    "  spaces before and after  ",
    "first line\nsecond line",
    "a\tb\tc",
    "dots... and more dots.....",
    "semi;colon,separated;values,here",
    "https://shop.example.org/cart?item=42&qty=3",
    "support@company.example replied with ticket #A-553",
    "1 2 3 4 5 6 7 8 9 10",
    *_LONG_CALIBRATION,
)
