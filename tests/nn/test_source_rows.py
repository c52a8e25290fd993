"""Cross-attention with several query rows per source (source_rows.py): each source's rows attending together over
its one copy of the keys and values equals every row attending over a copy of its own, in either form, with the
recorded probabilities and the gradients per row."""
import contextlib

import numpy as np
import pytest

import seq2seq
from seq2seq.core.errors import InputError
from seq2seq.core.gradcheck import check_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.nn.attention import causal_mask, merge_heads, padding_mask, scaled_dot_product_attention, split_heads
from seq2seq.nn.source_rows import group_rows, ungroup_rows


def arrays(xp, rng, *, b, copies, nh, t, s, hs, dtype=np.float32):
    """q as generation makes it, a head-split view of ``[B*c, T, C]``; k, v ``[B, nh, S, hs]`` once per source;
    a padding mask ``[B, 1, 1, S]`` that leaves the last source 3 keys short."""
    x = xp.asarray((rng.standard_normal((b * copies, t, nh * hs)) * 2).astype(dtype))
    q = split_heads(x, nh).data  # [B*c, T, C] -> [B*c, nh, T, hs]
    k, v = (xp.asarray((rng.standard_normal((b, nh, s, hs)) * 2).astype(dtype)) for _ in range(2))
    mask = np.ones((b, s), np.int64)
    mask[-1, s - 3:] = 0
    return q, k, v, padding_mask(xp.asarray(mask))


@pytest.mark.parametrize("t", [1, 3], ids=["one-query", "three-queries"])
@pytest.mark.parametrize("copies", [2, 4])
def test_grouped_equals_per_row(xp, form, copies, t):
    b, nh, s, hs = 3, 2, 7, 4
    q, k, v, keep = arrays(xp, np.random.default_rng(0), b=b, copies=copies, nh=nh, t=t, s=s, hs=hs)
    rows = xp.repeat(xp.arange(b), copies)  # [B*c]: each row's source
    grouped_probs, row_probs = [], []
    out = scaled_dot_product_attention(q, k, v, keep, probabilities_to=grouped_probs).data
    ref = scaled_dot_product_attention(q, k[rows], v[rows], keep[rows], probabilities_to=row_probs).data
    assert out.shape == ref.shape == (b * copies, nh, t, hs)
    np.testing.assert_allclose(seq2seq.to_numpy(out), seq2seq.to_numpy(ref), rtol=1e-5, atol=1e-6)
    (p,), (p_ref,) = grouped_probs, row_probs
    assert p.shape == p_ref.shape == (b * copies, nh, t, s)  # recorded per row, as transformers returns them
    np.testing.assert_allclose(seq2seq.to_numpy(p), seq2seq.to_numpy(p_ref), rtol=1e-5, atol=1e-6)
    # laid out as q (a head-split [B*c, T, C]): merge_heads turns it back without a copy
    assert xp.shares_memory(merge_heads(seq2seq.Tensor(out)).data, out)


def test_grouping_is_a_view_of_head_split_queries(xp):
    q, _, _, _ = arrays(xp, np.random.default_rng(1), b=2, copies=3, nh=2, t=2, s=5, hs=4)
    grouped = group_rows(q, 3).data  # [6, 2, 2, 4] -> [2, 2, 6, 4]
    assert grouped.shape == (2, 2, 6, 4) and xp.shares_memory(grouped, q)
    np.testing.assert_array_equal(seq2seq.to_numpy(grouped[1, :, 2:4]), seq2seq.to_numpy(q[4]))  # source 1, row 1
    back = ungroup_rows(grouped, 3).data
    assert back.shape == q.shape and xp.shares_memory(back, q)
    np.testing.assert_array_equal(seq2seq.to_numpy(back), seq2seq.to_numpy(q))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_grouped_gradients_finite_differences(fused):
    q, k, v, keep = arrays(np, np.random.default_rng(2), b=2, copies=2, nh=2, t=2, s=5, hs=3, dtype=np.float64)
    with contextlib.nullcontext() if fused else fast_cpu.disabled():
        assert check_grad(lambda q, k, v: scaled_dot_product_attention(q, k, v, keep), q, k, v)


def test_rows_that_cannot_share_keys_are_refused():
    q, k, v, keep = arrays(np, np.random.default_rng(3), b=2, copies=2, nh=1, t=1, s=4, hs=2)
    with pytest.raises(InputError, match="4 query rows cannot share 3 rows"):
        scaled_dot_product_attention(q, np.concatenate([k, k[:1]]), np.concatenate([v, v[:1]]), None)
    causal = causal_mask(np, 4, 4) & keep  # [2, 1, 4, 4]: a mask per query cannot be grouped
    with pytest.raises(InputError, match="padding mask"):
        scaled_dot_product_attention(np.repeat(q, 4, axis=2), k, v, causal)
