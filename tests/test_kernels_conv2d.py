"""kernels/conv2d.py: the reference against its definition and against finite differences in
float64, then every CPU version against the reference at several shapes, strides, paddings and
both dtypes. (The "cuda" version is checked under the simulator in test_kernels_cudasim.py; the
"cupy" one in tests/gpu/.)

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisims.kernels import conv2d as K
from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
                            out_size)
from minisims.gradcheck import assert_close, numerical_grad

# (N, C, O, H, W, k, s, p): odd sizes, 1x1 and 3x3, stride 1 and 2, padding 0 and 1
CASES = [
    (2, 3, 4, 5, 5, 3, 1, 1),
    (1, 2, 3, 6, 7, 3, 2, 1),
    (2, 3, 2, 7, 6, 3, 2, 0),
    (2, 2, 3, 5, 4, 3, 1, 0),
    (3, 4, 5, 5, 5, 1, 1, 0),
    (2, 3, 4, 7, 5, 1, 2, 0),
    (2, 2, 3, 4, 5, 1, 1, 1),
]
FAST = ["numpy", "numba", "direct"]


def _data(rng, N, C, O, H, W, k, s, p, dtype=np.float64):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)  # N,C,H,W
    w = rng.standard_normal((O, C, k, k)).astype(dtype)  # O,C,k,k
    b = rng.standard_normal(O).astype(dtype)  # O
    dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(dtype)
    return x, w, b, dy


def _by_definition(x, w, b, s, p):
    """y[n,o,h,v] = b[o] + sum_{c,i,j} x[n,c,s h+i-p, s v+j-p] w[o,c,i,j], zero outside x."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = out_size(H, kh, s, p), out_size(W, kw, s, p)
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for h in range(Ho):
                for v in range(Wo):
                    acc = b[o]
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                hh, vv = s * h + i - p, s * v + j - p
                                if 0 <= hh < H and 0 <= vv < W:
                                    acc += x[n, c, hh, vv] * w[o, c, i, j]
                    y[n, o, h, v] = acc
    return y


@pytest.mark.parametrize("case", CASES)
def test_reference_forward_matches_definition(rng, case):
    x, w, b, _ = _data(rng, *case)
    s, p = case[6], case[7]
    # float64, at most 36 products per value: agreement to rounding
    assert_close("y", conv2d_forward(x, w, b, s, p, impl="reference"), _by_definition(x, w, b, s, p),
                 rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_reference_backward_matches_finite_differences(rng, case):
    x, w, b, dy = _data(rng, *case)
    s, p = case[6], case[7]

    def loss():  # L = sum(y * dy): dL/dy = dy, a random upstream gradient
        return float((conv2d_forward(x, w, b, s, p, impl="reference") * dy).sum())

    dx = conv2d_backward_input(dy, w, x.shape, s, p, impl="reference")
    dw, db = conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")
    # L is linear in each of x, w, b: centred differences are exact up to rounding (~1e-10)
    assert_close("dx", dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    assert_close("dw", dw, numerical_grad(loss, w), rtol=1e-6, atol=1e-8)
    assert_close("db", db, numerical_grad(loss, b), rtol=1e-6, atol=1e-8)


def _tolerance(dtype, w_shape):
    """float64: rounding only. float32: K = C*k*k products of O(1) values summed in another
    order than the reference's, each rounding at 6e-8 relative: a few 1e-6 of O(sqrt(K))."""
    if dtype == np.float64:
        return 1e-11, 1e-11
    K = w_shape[1] * w_shape[2] * w_shape[3]
    return 1e-5, 2e-6 * K


def _check_version(impl, x, w, b, dy, s, p):
    rtol, atol = _tolerance(x.dtype, w.shape)
    y = conv2d_forward(x, w, b, s, p, impl=impl)
    dx = conv2d_backward_input(dy, w, x.shape, s, p, impl=impl)
    dw, db = conv2d_backward_weight(dy, x, w.shape, s, p, impl=impl)
    for name, mine, ref in (
            ("y", y, conv2d_forward(x, w, b, s, p, impl="reference")),
            ("dx", dx, conv2d_backward_input(dy, w, x.shape, s, p, impl="reference")),
            ("dw", dw, conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")[0]),
            ("db", db, dy.sum(axis=(0, 2, 3)))):
        assert mine.dtype == x.dtype, f"{impl} {name}: dtype {mine.dtype} != {x.dtype}"
        assert_close(f"{impl} {name}", mine, ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_fast_versions_match_reference(rng, impl, dtype, case):
    x, w, b, dy = _data(rng, *case, dtype=dtype)
    _check_version(impl, x, w, b, dy, case[6], case[7])


@pytest.mark.parametrize("impl", FAST)
def test_fast_versions_at_unet_like_shape(rng, impl):
    # more channels than the tiny cases, so the GEMMs have real depth: N 4, 16 -> 24, 12x12
    for dtype in (np.float32, np.float64):
        for k, s, p in ((3, 1, 1), (3, 2, 1), (1, 1, 0)):
            x, w, b, dy = _data(rng, 4, 16, 24, 12, 12, k, s, p, dtype=dtype)
            _check_version(impl, x, w, b, dy, s, p)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 4), O=st.integers(1, 4), H=st.integers(1, 7),
       W=st.integers(1, 7), k=st.sampled_from([1, 3]), s=st.sampled_from([1, 2]),
       p=st.sampled_from([0, 1]), impl=st.sampled_from(FAST), seed=st.integers(0, 2 ** 16))
def test_fast_versions_any_shape(N, C, O, H, W, k, s, p, impl, seed):
    if H + 2 * p < k or W + 2 * p < k:  # no output: the functions refuse it (tested below)
        return
    x, w, b, dy = _data(np.random.default_rng(seed), N, C, O, H, W, k, s, p)
    _check_version(impl, x, w, b, dy, s, p)


def test_numba_chunks_cover_the_batch(rng, monkeypatch):
    # several chunks and a partial last one: 11 images of 5x5 = 25 rows, chunks of 2 images
    from minisims.kernels import _conv2d_numba
    monkeypatch.setattr(_conv2d_numba, "CHUNK_ROWS", 50)
    x, w, b, dy = _data(rng, 11, 3, 4, 5, 5, 3, 2, 1)
    _check_version("numba", x, w, b, dy, 2, 1)
    x, w, b, dy = _data(rng, 11, 3, 4, 5, 5, 3, 1, 1)
    _check_version("numba", x, w, b, dy, 1, 1)


# "direct" (kernels/_conv2d_direct.py) has remainder paths the small cases above never reach: its
# tiles are 5 pixels x 16 (float64: 8) output channels and 5 input channels x 16 output channels.
# (N, C, O, H, W, kh, kw, s, p): channels and widths off the tile sizes, padding 2, batch 1,
# non-square kernels (their input gradient falls back to "numba"), stride 2 with padding 2.
DIRECT_CASES = [
    (1, 7, 21, 9, 11, 3, 3, 1, 2),
    (3, 17, 33, 6, 13, 3, 3, 1, 1),
    (2, 5, 16, 8, 8, 3, 3, 2, 2),
    (1, 6, 9, 7, 5, 1, 1, 1, 1),
    (2, 4, 17, 6, 7, 1, 3, 1, 1),
    (2, 3, 5, 7, 6, 3, 1, 2, 0),
    (1, 11, 3, 5, 4, 3, 3, 1, 0),
]


def _data_rect(rng, N, C, O, H, W, kh, kw, s, p, dtype):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)  # N,C,H,W
    w = rng.standard_normal((O, C, kh, kw)).astype(dtype)  # O,C,kh,kw
    b = rng.standard_normal(O).astype(dtype)  # O
    dy = rng.standard_normal((N, O, out_size(H, kh, s, p), out_size(W, kw, s, p))).astype(dtype)
    return x, w, b, dy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DIRECT_CASES)
def test_direct_remainder_paths(rng, dtype, case):
    x, w, b, dy = _data_rect(rng, *case, dtype=dtype)
    _check_version("direct", x, w, b, dy, case[7], case[8])


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 12), O=st.integers(1, 20), H=st.integers(1, 9),
       W=st.integers(1, 9), k=st.sampled_from([1, 3]), s=st.sampled_from([1, 2]),
       p=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2 ** 16))
def test_direct_any_shape(N, C, O, H, W, k, s, p, seed):
    if H + 2 * p < k or W + 2 * p < k:
        return
    x, w, b, dy = _data(np.random.default_rng(seed), N, C, O, H, W, k, s, p)
    _check_version("direct", x, w, b, dy, s, p)


def test_direct_results_do_not_depend_on_the_thread_count(rng, monkeypatch):
    # each image is computed by one thread, and each weight-gradient tile sums the whole batch in
    # one order whichever thread runs it: y, dx and dw are the same bits on 1, 2 or 3 threads
    from minisims.kernels import _threads
    # 9x9 (81 output pixels): the micro-kernel's weight gradient (up to 64: _conv2d_small_dw.py)
    x, w, b, dy = _data(rng, 5, 12, 40, 9, 9, 3, 1, 1, dtype=np.float32)  # 3 x 3 weight tiles
    out = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "THREADS", threads)
        out[threads] = (conv2d_forward(x, w, b, 1, 1, impl="direct"),
                        conv2d_backward_input(dy, w, x.shape, 1, 1, impl="direct"),
                        *conv2d_backward_weight(dy, x, w.shape, 1, 1, impl="direct"))
    for threads in (2, 3):
        for name, a, a1 in zip(("y", "dx", "dw", "db"), out[threads], out[1]):
            assert np.array_equal(a, a1), f"{name} differs between 1 and {threads} threads"


@pytest.mark.parametrize("threads", [2, 3])
def test_direct_1x1_on_the_kernel_threads_only_where_blas_is_declared_on_one(rng, monkeypatch,
                                                                           threads):
    # kernels/_conv2d_pointwise.py: the images go to the kernel threads only inside a
    # blas_on_one_thread scope (else one BLAS call); the same bits either way
    from minisims.kernels import _threads
    monkeypatch.setattr(_threads, "THREADS", threads)
    calls = []
    run = _threads.run
    monkeypatch.setattr(_threads, "run", lambda fn, ranges: calls.append(ranges) or run(fn, ranges))
    x, w, b, dy = _data(rng, 5, 6, 7, 5, 4, 1, 1, 0, dtype=np.float32)

    def three():
        return (conv2d_forward(x, w, b, 1, 0, impl="direct"),
                conv2d_backward_input(dy, w, x.shape, 1, 0, impl="direct"),
                *conv2d_backward_weight(dy, x, w.shape, 1, 0, impl="direct"))
    alone = three()
    assert calls == []
    with _threads.blas_on_one_thread():  # the test session holds BLAS on one thread (conftest)
        shared = three()
    assert len(calls) == 3 and all(len(r) == threads for r in calls)
    for name, a, a1 in zip(("y", "dx", "dW", "db"), shared, alone):
        assert np.array_equal(a, a1), name


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("s", [1, 2])
def test_direct_small_weight_gradient_same_bits_on_the_threads_or_not(rng, monkeypatch, threads,
                                                                      s):
    # kernels/_conv2d_small_dw.py (at most 64 output pixels): ranges of RANGE_IMAGES images, on
    # the kernel threads only inside a blas_on_one_thread scope; the same bits either way, and
    # against the reference within float32 rounding
    from minisims.kernels import _conv2d_small_dw, _threads
    monkeypatch.setattr(_threads, "THREADS", threads)
    calls = []
    run = _threads.run
    monkeypatch.setattr(_threads, "run", lambda fn, ranges: calls.append(ranges) or run(fn, ranges))
    x, w, b, dy = _data(rng, 11, 7, 20, 8, 7, 3, s, 1, dtype=np.float32)  # 11 images: 3 ranges
    assert _conv2d_small_dw.applies(w.shape, dy.shape[2] * dy.shape[3])
    alone = conv2d_backward_weight(dy, x, w.shape, s, 1, impl="direct")
    assert calls == []
    with _threads.blas_on_one_thread():  # the test session holds BLAS on one thread (conftest)
        shared = conv2d_backward_weight(dy, x, w.shape, s, 1, impl="direct")
    assert len(calls) == 1 and len(calls[0]) == min(threads, 3)
    assert np.array_equal(shared[0], alone[0]) and np.array_equal(shared[1], alone[1])
    ref = conv2d_backward_weight(dy, x, w.shape, s, 1, impl="reference")
    np.testing.assert_allclose(shared[0], ref[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", FAST)
def test_results_do_not_alias_reused_buffers(rng, impl):
    # the fast versions reuse scratch buffers between calls: results must be fresh arrays
    x1, w, b, dy1 = _data(rng, 2, 3, 4, 5, 5, 3, 1, 1, dtype=np.float32)
    x2, _, _, dy2 = _data(rng, 2, 3, 4, 5, 5, 3, 1, 1, dtype=np.float32)
    y1 = conv2d_forward(x1, w, b, 1, 1, impl=impl)
    dx1 = conv2d_backward_input(dy1, w, x1.shape, 1, 1, impl=impl)
    dw1, db1 = conv2d_backward_weight(dy1, x1, w.shape, 1, 1, impl=impl)
    kept = [a.copy() for a in (y1, dx1, dw1, db1)]
    conv2d_forward(x2, w, b, 1, 1, impl=impl)
    conv2d_backward_input(dy2, w, x2.shape, 1, 1, impl=impl)
    conv2d_backward_weight(dy2, x2, w.shape, 1, 1, impl=impl)
    for name, a, a0 in zip(("y", "dx", "dw", "db"), (y1, dx1, dw1, db1), kept):
        assert np.array_equal(a, a0), f"{impl}: {name} changed when the kernel ran again"


def test_auto_picks_the_measured_cpu_version(rng):
    x, w, b, dy = _data(rng, 2, 3, 4, 5, 5, 3, 1, 1)
    assert K._resolve("auto", x) == K.AUTO_CPU
    assert np.array_equal(conv2d_forward(x, w, b, 1, 1), conv2d_forward(x, w, b, 1, 1, impl=K.AUTO_CPU))


def test_inputs_are_checked(rng):
    x, w, b, dy = _data(rng, 2, 3, 4, 5, 5, 3, 1, 1)
    with pytest.raises(ValueError, match="channels"):
        conv2d_forward(x[:, :2], w, b, 1, 1)
    with pytest.raises(ValueError, match="larger than"):
        conv2d_forward(x[:, :, :1, :1], w, b, 1, 0)
    with pytest.raises(ValueError, match="does not run on NumPy"):
        conv2d_forward(x, w, b, 1, 1, impl="cupy")
    with pytest.raises(ValueError, match="stride"):
        conv2d_forward(x, w, b, 0, 1)
