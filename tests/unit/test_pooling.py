"""numpy pooling against torch references, the way sentence-transformers pools."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.pooling import l2_normalize, pool, truncate_dims


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(4, 7, 5)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5])
    mask = (np.arange(7)[None, :] < lengths[:, None]).astype(np.int64)
    return emb, mask


def _torch_reference(emb: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    import torch  # only here: the fast tier imports no torch

    e, m = torch.from_numpy(emb), torch.from_numpy(mask)
    expanded = m.unsqueeze(-1).float()
    if mode == "mean":
        return ((e * expanded).sum(1) / expanded.sum(1).clamp(min=1e-9)).numpy()
    if mode == "cls":
        return e[:, 0].numpy()
    if mode == "max":
        return e.masked_fill(expanded == 0, -1e9).max(1).values.numpy()
    last = m.sum(1) - 1
    return e[torch.arange(e.shape[0]), last].numpy()


@pytest.mark.slow  # importing torch for the reference costs 2-4 s; the rest of the fast tier needs none
@pytest.mark.parametrize("mode", ["mean", "cls", "max", "lasttoken"])
def test_pooling_matches_torch_reference(mode: str) -> None:
    emb, mask = _inputs()
    np.testing.assert_allclose(pool(emb, mask, mode), _torch_reference(emb, mask, mode), atol=1e-6)


def test_padding_values_never_leak_into_pooled_vectors() -> None:
    emb, mask = _inputs()
    noisy = emb.copy()
    noisy[mask == 0] = 1e6  # garbage where the mask says padding
    for mode in ("mean", "cls", "max", "lasttoken"):
        np.testing.assert_allclose(pool(noisy, mask, mode), pool(emb, mask, mode), atol=1e-5)


def test_unknown_mode_and_bad_shapes_are_clear_errors() -> None:
    emb, mask = _inputs()
    with pytest.raises(ValueError, match="unknown pooling mode"):
        pool(emb, mask, "weighted")
    with pytest.raises(ValueError, match="expected"):
        pool(emb[:, :, 0], mask, "mean")


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    v = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(v)
    np.testing.assert_allclose(out[0], [0.6, 0.8], atol=1e-7)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])


def test_truncate_dims_cuts_then_renormalises() -> None:
    v = l2_normalize(np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32))
    cut = truncate_dims(v, 4, normalize=True)
    assert cut.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    # Direction of the kept prefix is unchanged (reference written out, not the code under test).
    prefix = v[:, :4]
    np.testing.assert_allclose(cut, prefix / np.sqrt((prefix**2).sum(axis=1, keepdims=True)), atol=1e-6)
    np.testing.assert_array_equal(truncate_dims(v, 4, normalize=False), v[:, :4])
    with pytest.raises(ValueError, match="between 1 and 8"):
        truncate_dims(v, 9, normalize=True)


@pytest.mark.parametrize("normalize", [None, True, False])
@pytest.mark.parametrize("dimensions", [None, 3])
def test_pooling_in_the_replica_then_finishing_in_the_ingress_equals_pooling_in_one_place(
    normalize: bool | None, dimensions: int | None
) -> None:
    """The fused topology pools unnormalised in the model replica and applies the request's
    normalize / dimensions in the ingress; the vectors must be those of the one-stage Pooler."""
    from embedder.batches import HiddenStates
    from embedder.pooling import Pooler

    emb, mask = _inputs()
    pooler = Pooler("mean", normalize=True)
    whole = pooler(HiddenStates(emb, mask, np.arange(len(emb))), normalize, dimensions).embeddings
    split = pooler.finish(pool(emb, mask, "mean"), normalize, dimensions)
    np.testing.assert_allclose(split, whole, atol=1e-7)
