"""kernels/softmax.py: the reference against its definition and finite differences in float64,
then the numba version against the reference in float32, on any number of threads.

# N batch, I rows, J entries per row
"""
import numpy as np
import pytest

from minisims.kernels import softmax as K
from minisims.gradcheck import assert_close, numerical_grad

SCALE = 1 / np.sqrt(32)


def _by_definition(S, scale):
    e = np.exp(scale * S - (scale * S).max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_reference_forward_is_softmax_and_writes_over_s(rng):
    S = rng.standard_normal((2, 3, 7)) * 4  # N,I,J
    want = _by_definition(S, SCALE)
    A = K.softmax_forward(S, SCALE, "reference")
    assert A is S
    assert_close("A", A, want, 1e-14, 1e-15)
    assert_close("rows", A.sum(axis=-1), np.ones((2, 3)), 1e-14, 1e-14)


def test_reference_backward_matches_finite_differences(rng):
    S = rng.standard_normal((2, 3, 5))  # N,I,J
    dA = rng.standard_normal((2, 3, 5))  # N,I,J: the loss is sum(dA * A)
    A = K.softmax_forward(S.copy(), SCALE, "reference")
    got = K.softmax_backward(A, dA, SCALE, "reference")
    want = numerical_grad(lambda: np.sum(dA * _by_definition(S, SCALE)), S)
    assert_close("dS", got, want, 1e-7, 1e-9)


def _float32_case(rng, N=3, I=9, J=70, spread=6.0):
    S = (rng.standard_normal((N, I, J)) * spread).astype(np.float32)  # N,I,J
    dA = rng.standard_normal((N, I, J)).astype(np.float32)  # N,I,J
    return S, dA


@pytest.mark.parametrize("spread", [1.0, 6.0, 400.0])
def test_numba_matches_the_reference(rng, spread):
    # spread 400: scaled entries down to about -200 below their row's maximum, past the exp's
    # clamp at -87 (numba: about 1.6e-38 times the row's largest; NumPy: 0)
    S, dA = _float32_case(rng, spread=spread)
    ref = K.softmax_forward(S.copy(), SCALE, "reference")
    got = K.softmax_forward(S.copy(), SCALE, "numba")
    assert got.dtype == np.float32
    assert_close("A", got, ref, 2e-6, 1e-7)
    want = K.softmax_backward(ref, dA, SCALE, "reference")
    dS = K.softmax_backward(got, dA, SCALE, "numba")
    assert_close("dS", dS, want, 1e-5, 1e-6)
    # and against float64, within what float32 inputs allow: scale*S rounds by up to half an
    # ulp of the largest |scale S| (and u = scale S - max once more), which exp turns into a
    # relative error of A of that size
    ref64 = _by_definition(S.astype(np.float64), SCALE)
    inherent = 2 * np.spacing(np.abs(np.float32(SCALE) * S).max())
    assert_close("A vs float64", got, ref64, 2e-6 + 2 * inherent, 1e-7)
    assert_close("reference vs float64", ref, ref64, 2e-6 + 2 * inherent, 1e-7)


def test_numba_results_do_not_depend_on_the_thread_count(rng, monkeypatch):
    from minisims.kernels import _threads
    S, dA = _float32_case(rng, N=5)
    out = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "THREADS", threads)
        A = K.softmax_forward(S.copy(), SCALE, "numba")
        out[threads] = (A, K.softmax_backward(A, dA, SCALE, "numba"))
    for threads in (2, 3):
        assert all(np.array_equal(a, a1) for a, a1 in zip(out[threads], out[1])), threads


def test_auto_and_errors(rng):
    S, dA = _float32_case(rng)
    assert np.array_equal(K.softmax_forward(S.copy(), SCALE), K.softmax_forward(S.copy(), SCALE, "numba"))
    S64 = S.astype(np.float64)
    assert np.array_equal(K.softmax_forward(S64.copy(), SCALE),
                          K.softmax_forward(S64.copy(), SCALE, "reference"))
    with pytest.raises(ValueError, match="float32 NumPy"):
        K.softmax_forward(S64, SCALE, "numba")
    with pytest.raises(ValueError, match="unknown impl"):
        K.softmax_forward(S, SCALE, "fast")
    with pytest.raises(ValueError, match="one shape"):
        K.softmax_backward(S, dA[:, :, :5], SCALE)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.softmax_forward(S.transpose(0, 2, 1), SCALE, "numba")


def test_attention_with_the_numba_softmax_against_the_array_code(rng, monkeypatch):
    # minisims.nn.attention: the float32 layer with the fast paths on (the numba softmax and bmm,
    # the direct convolution) and off (minisims.ops' array code) agree in y, dx and every weight
    # gradient within float32 tolerances
    from minisims import ops
    from minisims.nn.attention import SelfAttention2d
    x = rng.standard_normal((3, 8, 4, 5)).astype(np.float32)  # N,C,H,W
    dy = rng.standard_normal((3, 8, 4, 5)).astype(np.float32)  # N,C,H,W
    out = {}
    for impl, fast in (("auto", True), ("reference", False)):
        monkeypatch.setattr(ops, "FAST", fast)
        attn = SelfAttention2d(8, 2, np.random.default_rng(3), dtype=np.float32)
        attn.zero_grad()
        y = attn.forward(x)
        dx, = attn.backward(dy)
        out[impl] = (y, dx, {name: mod.grads[k].copy() for name, mod, k in attn.named_parameters()})
    (y, dx, g), (y_ref, dx_ref, g_ref) = out["auto"], out["reference"]
    assert_close("y", y, y_ref, 1e-5, 1e-6)
    assert_close("dx", dx, dx_ref, 1e-4, 1e-5)
    for name in g_ref:
        assert_close(name, g[name], g_ref[name], 1e-4, 1e-5)
