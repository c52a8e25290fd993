"""The attention kernels: decode_attention.cu (one query per row, over the KV cache and over the encoder) and
flash_attention.cu (many queries, fused).

On the CPU: the references (seq2seq/fast/cuda/reference.py) against the package's own attention (nn/attention.py,
nn/cache.py), and the float32 kernels through the CPU emulation against the references. With a GPU (marker
``gpu``, through the ``launcher`` fixture): the same launches in float32, float16 and bfloat16.
"""
import numpy as np
import pytest

from cuda_testing import TOL, back, storage
from seq2seq.core.autograd import no_grad
from seq2seq.core.errors import InputError
from seq2seq.fast.cuda import eager_plans, plans, reference
from seq2seq.nn.attention import causal_mask, combine_masks, padding_mask, scaled_dot_product_attention
from seq2seq.nn.cache import LayerCache


def attention(q, k, v, keep, scale=None):
    """The package's attention on arrays ``[B, nh, T, hs]``."""
    with no_grad():
        return scaled_dot_product_attention(q, k, v, keep, scale=scale).data


def normal(rng, *shape):
    return (rng.standard_normal(shape) * 2).astype(np.float32)


# ---- references against nn/ (CPU) ------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [None, 0.3])
def test_decode_self_attention_reference_follows_the_layer_cache(scale, rng):
    rows, heads, hs, max_len = 3, 2, 8, 6
    layer = LayerCache(max_len)
    k_cache, v_cache = (np.zeros((rows, heads, max_len, hs), np.float32) for _ in range(2))
    for step in range(4):
        q, k_new, v_new = (normal(rng, rows, heads, hs) for _ in range(3))
        k, v = layer.append(k_new[:, :, None], v_new[:, :, None], step)  # -> [rows, heads, step + 1, hs]
        want = attention(q[:, :, None], k, v, None, scale)[:, :, 0]
        lengths = np.full(rows, step + 1, np.int32)
        got = reference.decode_self_attention(q, k_new, v_new, k_cache, v_cache, lengths, scale=scale)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(k_cache[:, :, :step + 1], k)
        np.testing.assert_array_equal(v_cache[:, :, :step + 1], v)


def test_decode_self_attention_reference_reads_each_rows_own_length(rng):
    rows, heads, hs, max_len = 4, 3, 5, 7
    q = normal(rng, rows, heads, hs)
    k_cache, v_cache = normal(rng, rows, heads, max_len, hs), normal(rng, rows, heads, max_len, hs)
    lengths = np.array([1, 7, 3, 5], np.int32)
    keep = (np.arange(max_len)[None, :] < lengths[:, None])[:, None, None, :]  # [rows, 1, 1, max_len]
    want = attention(q[:, :, None], k_cache, v_cache, keep)[:, :, 0]
    got = reference.decode_self_attention(q, None, None, k_cache, v_cache, lengths)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_decode_cross_attention_reference_equals_attention_over_one_copy_per_beam(rng):
    sources, beams, heads, hs, s = 3, 2, 2, 6, 5
    q = normal(rng, sources * beams, heads, hs)
    k_enc, v_enc = normal(rng, sources, heads, s, hs), normal(rng, sources, heads, s, hs)
    mask = np.ones((sources, s), np.int64)
    mask[1, 3:] = 0
    mask[2] = 0  # a source with no real token: the CPU path averages every position
    source_of_row = np.repeat(np.arange(sources), beams).astype(np.int32)  # row0, row0, row1, row1, ... (sources.py)
    copies = [np.repeat(a, beams, axis=0) for a in (k_enc, v_enc, mask)]
    want = attention(q[:, :, None], copies[0], copies[1], padding_mask(copies[2]))[:, :, 0]
    got = reference.decode_cross_attention(q, k_enc, v_enc, source_of_row=source_of_row, keep=mask != 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


KEEPS = ["none", "padding", "causal", "causal+padding", "all-keys-masked"]


def flash_case(rng, kind, b=2, t=5, s=7, heads=3, hs=4):
    """(q, k, v in the [B, T, nh, hs] layout, key_keep [B, S] or None, causal, keep for nn's [B, nh, T, S])."""
    q, k, v = normal(rng, b, t, heads, hs), normal(rng, b, s, heads, hs), normal(rng, b, s, heads, hs)
    key_keep = None
    if kind in ("padding", "causal+padding", "all-keys-masked"):
        key_keep = np.ones((b, s), bool)
        key_keep[-1, s // 2:] = False
        if kind == "all-keys-masked":
            key_keep[0] = False
    causal = kind.startswith("causal")
    keep = combine_masks(causal_mask(np, t, s) if causal else None,
                         None if key_keep is None else padding_mask(key_keep.astype(np.int64)))
    return q, k, v, key_keep, causal, keep


@pytest.mark.parametrize("kind", KEEPS)
@pytest.mark.parametrize("t, s", [(5, 7), (7, 7), (1, 4)])
def test_flash_attention_reference_equals_attention(kind, t, s, rng):
    q, k, v, key_keep, causal, keep = flash_case(rng, kind, t=t, s=s)
    heads_first = [a.transpose(0, 2, 1, 3) for a in (q, k, v)]  # [B, T, nh, hs] -> [B, nh, T, hs]
    want = attention(*heads_first, keep).transpose(0, 2, 1, 3)
    got = reference.flash_attention(q, k, v, key_keep=key_keep, causal=causal)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- the kernels against the references: emulated float32 on the CPU, each storage type on a GPU -----------------

@pytest.mark.parametrize("fused_qkv", [False, True], ids=["separate", "views-of-fused-qkv"])
def test_decode_self_attention_kernel(launcher, fused_qkv, rng):
    xp, dtype = launcher.xp, launcher.dtype
    rows, heads, hs, max_len = 3, 4, 40, 9
    qkv, qkv_f = storage(normal(rng, rows, 3, heads, hs), dtype)  # [rows, q|k|v, heads, hs], as GPT-2's c_attn
    cache, cache_f = storage(normal(rng, 2, rows, heads, max_len, hs), dtype)
    lengths = np.array([1, 5, 9], np.int32)
    dev, dev_cache = xp.asarray(qkv), xp.asarray(cache)
    q, k_new, v_new = (dev[:, i] for i in range(3))  # views with a row stride of 3 C
    if not fused_qkv:
        q, k_new, v_new = (xp.ascontiguousarray(a) for a in (q, k_new, v_new))
    launch = plans.decode_self_attention(q, k_new, v_new, dev_cache[0], dev_cache[1], xp.asarray(lengths),
                                         dtype=dtype)
    assert launch.args[3] == (3 * heads * hs if fused_qkv else heads * hs)  # the row stride, no copies
    got = back(launcher.run(launch), dtype)
    want = reference.decode_self_attention(qkv_f[:, 0], qkv_f[:, 1], qkv_f[:, 2], cache_f[0], cache_f[1], lengths)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=2 * TOL[dtype])
    np.testing.assert_array_equal(back(dev_cache, dtype), cache_f)  # the step's k and v written where the reference did


def test_decode_self_attention_kernel_on_a_filled_cache(launcher, rng):
    xp, dtype = launcher.xp, launcher.dtype
    (q, qf), (cache, cache_f) = storage(normal(rng, 2, 3, 64), dtype), storage(normal(rng, 2, 2, 3, 130, 64), dtype)
    lengths = np.array([130, 77], np.int32)
    dev_cache = xp.asarray(cache)
    got = back(launcher.run(plans.decode_self_attention(xp.asarray(q), None, None, dev_cache[0], dev_cache[1],
                                                        xp.asarray(lengths), scale=0.2, dtype=dtype)), dtype)
    want = reference.decode_self_attention(qf, None, None, cache_f[0], cache_f[1], lengths, scale=0.2)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=2 * TOL[dtype])
    np.testing.assert_array_equal(back(dev_cache, dtype), cache_f)  # nothing written


@pytest.mark.parametrize("shared", [True, False], ids=["beams-share-sources", "one-source-per-row"])
def test_decode_cross_attention_kernel(launcher, shared, rng):
    xp, dtype = launcher.xp, launcher.dtype
    sources, beams, heads, hs, s = 3, 2, 2, 64, 37
    rows = sources * beams if shared else sources
    (q, qf), (enc, enc_f) = storage(normal(rng, rows, heads, hs), dtype), storage(normal(rng, 2, sources, heads, s,
                                                                                         hs), dtype)
    keep = np.ones((sources, s), bool)
    keep[1, 20:] = False
    keep[2] = False  # no real token: a plain average, as the CPU path gives
    source_of_row = np.repeat(np.arange(sources), beams).astype(np.int32) if shared else None
    dev_enc = xp.asarray(enc)
    launch = plans.decode_cross_attention(xp.asarray(q), dev_enc[0], dev_enc[1], keep=xp.asarray(keep), dtype=dtype,
                                          source_of_row=None if source_of_row is None else xp.asarray(source_of_row))
    got = back(launcher.run(launch), dtype)
    want = reference.decode_cross_attention(qf, enc_f[0], enc_f[1], source_of_row=source_of_row, keep=keep)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=2 * TOL[dtype])


@pytest.mark.parametrize("kind", KEEPS)
def test_flash_attention_kernel(launcher, kind, rng):
    xp, dtype = launcher.xp, launcher.dtype
    q, k, v, key_keep, causal, _ = flash_case(rng, kind, b=2, t=70, s=45, heads=2, hs=64)  # 2 query blocks, 2 tiles
    (q, qf), (k, kf), (v, vf) = (storage(a, dtype) for a in (q, k, v))
    launch = plans.flash_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=causal, dtype=dtype,
                                   key_keep=None if key_keep is None else xp.asarray(key_keep))
    got = back(launcher.run(launch), dtype)
    want = reference.flash_attention(qf, kf, vf, key_keep=key_keep, causal=causal)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=2 * TOL[dtype])


def test_flash_attention_kernel_reads_a_fused_projection_in_place(launcher, rng):
    xp, dtype = launcher.xp, launcher.dtype
    b, t, heads, hs = 2, 33, 2, 32  # head size 32: compiled with FA_HEAD_SIZE 32
    qkv, qkv_f = storage(normal(rng, b, t, 3, heads, hs), dtype)  # [B, T, q|k|v, nh, hs]: a fused [B, T, 3C]
    dev = xp.asarray(qkv)
    launch = plans.flash_attention(dev[:, :, 0], dev[:, :, 1], dev[:, :, 2], causal=True, scale=0.5, dtype=dtype)
    assert launch.args[3] == launch.args[4] == 3 * heads * hs and launch.defines == (("FA_HEAD_SIZE", 32),)
    got = back(launcher.run(launch), dtype)
    want = reference.flash_attention(qkv_f[:, :, 0], qkv_f[:, :, 1], qkv_f[:, :, 2], causal=True, scale=0.5)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=2 * TOL[dtype])


# ---- the plans' checks (CPU) ------------------------------------------------------------------------------------

def test_decode_plans_refuse_mismatched_buffers():
    q = np.zeros((2, 3, 8), np.float32)
    cache = np.zeros((2, 3, 5, 8), np.float32)
    with pytest.raises(InputError, match="lengths must be int32"):
        plans.decode_self_attention(q, q, q, cache, cache, np.ones(2, np.int64))
    with pytest.raises(InputError, match="caches must be"):
        plans.decode_self_attention(q, q, q, cache[:, :2], cache[:, :2], np.ones(2, np.int32))
    with pytest.raises(InputError, match="together"):
        plans.decode_self_attention(q, q, None, cache, cache, np.ones(2, np.int32))
    with pytest.raises(InputError, match="need source_of_row"):
        plans.decode_cross_attention(q, cache[:1], cache[:1])
    with pytest.raises(InputError, match="keep must be bool"):
        plans.decode_cross_attention(q, cache, cache, keep=np.ones((2, 5), np.int64))


def test_flash_plan_copies_what_it_cannot_read_in_place(rng):
    q = normal(rng, 2, 4, 3, 8)
    k = normal(rng, 2, 3, 5, 8).transpose(0, 2, 1, 3)  # heads-first memory: not a [B, S, nh, hs] layout
    launch = plans.flash_attention(q, k, k)
    assert launch.args[1].flags.c_contiguous and launch.args[4] == 3 * 8
    assert launch.grid == (1, 3, 2) and launch.block == (plans.FA_QUERIES,)
    with pytest.raises(InputError, match="no keys"):
        plans.flash_attention(q, k[:, :0], k[:, :0])


def test_decode_plan_refuses_more_keys_than_shared_memory_holds():
    q = np.zeros((1, 1, 64), np.float32)
    enc = np.zeros((1, 1, 12_000, 64), np.float32)  # 12,000 scores + 5 * 64 floats > 48 KiB
    with pytest.raises(InputError, match="shared memory"):
        plans.decode_cross_attention(q, enc, enc)


# ---- softmax.cu: the eager path's masked softmax and its backward ----------------------------------------------

def softmax_masks(rng, b=2, t=5, s=300):
    """Keep masks of every shape the attention gives, the last with a query that may see no key."""
    padding = padding_mask(np.array([[1] * s, [1] * (s - 40) + [0] * 40]))  # [B, 1, 1, S]
    causal = causal_mask(np, t, s)  # [1, 1, T, S]
    both = combine_masks(padding, causal)  # [B, 1, T, S]
    blind = both.copy()
    blind[1, 0, 2] = False  # that row sees nothing: uniform, as the CPU path
    return {"none": None, "padding": padding, "causal": causal, "padding_and_causal": both, "a_blind_row": blind}


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "padding_and_causal", "a_blind_row"])
def test_masked_softmax_references_match_the_attentions(kind, rng):
    keep = softmax_masks(rng)[kind]
    q, k, v = normal(rng, 2, 3, 5, 8), normal(rng, 2, 3, 300, 8), normal(rng, 2, 3, 300, 8)
    probs = reference.masked_softmax((q * 8 ** -0.5) @ np.swapaxes(k, -1, -2), keep)
    np.testing.assert_allclose(probs @ v, attention(q, k, v, keep), rtol=1e-5, atol=1e-5)
    gp = normal(rng, 2, 3, 5, 300)
    gs = reference.softmax_backward(gp, probs, keep)
    expected = probs * (gp - (gp * probs).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(gs, expected if keep is None else np.where(keep, expected, 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "padding_and_causal", "a_blind_row"])
def test_masked_softmax_kernels(launcher, kind, rng):
    xp, dtype = launcher.xp, launcher.dtype
    keep = softmax_masks(rng)[kind]
    (s, sf), (gp, gpf) = storage(normal(rng, 2, 3, 5, 300) * 4, dtype), storage(normal(rng, 2, 3, 5, 300), dtype)
    dev_keep = None if keep is None else xp.asarray(keep)
    probs = launcher.run(eager_plans.masked_softmax(xp.asarray(s), dev_keep, dtype=dtype))
    np.testing.assert_allclose(back(probs, dtype), reference.masked_softmax(sf, keep), rtol=TOL[dtype],
                               atol=TOL[dtype])
    gs = launcher.run(eager_plans.softmax_backward(xp.asarray(gp), probs, dev_keep, dtype=dtype))
    np.testing.assert_allclose(back(gs, dtype), reference.softmax_backward(gpf, back(probs, dtype), keep),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_masked_softmax_refuses_a_mask_it_cannot_read():
    scores = np.zeros((1, 1, 2, 3), np.float32)
    with pytest.raises(InputError, match="bool mask"):
        eager_plans.masked_softmax(scores, np.ones((1, 1, 2, 3), np.int64))
    with pytest.raises(InputError, match=r"\[B, nh, T, S\]"):
        eager_plans.masked_softmax(scores[0], None)
