"""kernels/heun.py: the fused guided Heun stages, checked bit for bit.

The reference must be exactly the arithmetic of minisims' unfused sampler (edm_sampler with
sims_combine), every fast version exactly the reference, and w = 0 / w = -1 exactly the base /
auxiliary model's unguided step. Bits are compared with tobytes(), not a tolerance.

# S sample shape; w guidance weight; t_hat, t_next noise levels
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels.heun import heun_stage1, heun_stage2
from minisims.guidance import sims_combine

SHAPES = [(7,), (3, 2, 5, 7), (2, 3, 4, 4)]
WEIGHTS = [0.0, -1.0, 0.37, 2.5, -0.8, 7.0]
CPU = ["reference", "numba"]


def _bits_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _inputs(rng, shape, model_dtype):
    x_hat = rng.standard_normal(shape) * 3.0  # S, float64 state
    base = rng.standard_normal(shape).astype(model_dtype)  # S
    aux = rng.standard_normal(shape).astype(model_dtype)  # S
    return x_hat, base, aux


def _sampler_step1(x_hat, base, aux, w, t_hat, t_next):
    """The lines of minisims.diffusion.samplers.edm_sampler, as written there."""
    denoised = base if aux is None else sims_combine(base, aux, w)
    d_cur = (x_hat - denoised) / t_hat
    x_next = x_hat + (t_next - t_hat) * d_cur
    return x_next, d_cur


def _sampler_step2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    denoised = base if aux is None else sims_combine(base, aux, w)
    d_prime = (x_next - denoised) / t_next
    return x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)


LEVELS = [(np.float64(80.0), np.float64(57.58)), (np.float64(1.61), np.float64(1.2345)),
          (np.float64(0.0123), np.float64(0.002))]


@pytest.mark.parametrize("impl", CPU)
@pytest.mark.parametrize("model_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_stages_equal_the_unfused_sampler_bit_for_bit(rng, impl, model_dtype, shape):
    for w in WEIGHTS:
        for t_hat, t_next in LEVELS:
            for guided in (True, False):
                x_hat, base, aux = _inputs(rng, shape, model_dtype)
                aux = aux if guided else None
                ref_next, ref_d = _sampler_step1(x_hat, base, aux, w, t_hat, t_next)
                x_next, d_cur = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl=impl)
                assert _bits_equal(x_next, ref_next), (impl, w, guided, "x_next")
                assert _bits_equal(d_cur, ref_d), (impl, w, guided, "d_cur")
                _, base2, aux2 = _inputs(rng, shape, model_dtype)
                aux2 = aux2 if guided else None
                ref2 = _sampler_step2(x_hat, ref_next, ref_d, base2, aux2, w, t_hat, t_next)
                out = heun_stage2(x_hat, x_next, d_cur, base2, aux2, w, t_hat, t_next, impl=impl)
                assert _bits_equal(out, ref2), (impl, w, guided, "stage 2")


@pytest.mark.parametrize("impl", CPU)
def test_w0_is_the_base_model_and_w_minus1_the_aux_model(rng, impl):
    x_hat, base, aux = _inputs(rng, (4, 3, 5, 5), np.float32)
    t_hat, t_next = np.float64(2.0), np.float64(1.3)
    g0 = heun_stage1(x_hat, base, aux, 0.0, t_hat, t_next, impl=impl)
    b0 = heun_stage1(x_hat, base, None, 0.0, t_hat, t_next, impl=impl)
    assert all(_bits_equal(a, b) for a, b in zip(g0, b0))
    g1 = heun_stage1(x_hat, base, aux, -1.0, t_hat, t_next, impl=impl)
    a1 = heun_stage1(x_hat, aux, None, 0.0, t_hat, t_next, impl=impl)
    # w = -1: 0 * base + aux, equal in value; only the sign of an exact zero could differ,
    # and the standard normal draws here have no zeros
    assert all(_bits_equal(a, b) for a, b in zip(g1, a1))
    x_next, d_cur = b0
    _, base2, aux2 = _inputs(rng, (4, 3, 5, 5), np.float32)
    assert _bits_equal(heun_stage2(x_hat, x_next, d_cur, base2, aux2, 0.0, t_hat, t_next, impl=impl),
                       heun_stage2(x_hat, x_next, d_cur, base2, None, 0.0, t_hat, t_next, impl=impl))


@settings(max_examples=40, deadline=None)
@given(w=st.floats(-3, 10, allow_nan=False), t_hat=st.floats(0.002, 80),
       ratio=st.floats(0.0, 0.99), n=st.integers(1, 50), seed=st.integers(0, 2 ** 16),
       model32=st.booleans())
def test_numba_equals_reference_for_any_weight_and_levels(w, t_hat, ratio, n, seed, model32):
    rng = np.random.default_rng(seed)
    x_hat, base, aux = _inputs(rng, (n,), np.float32 if model32 else np.float64)
    t_next = t_hat * ratio
    r1 = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="reference")
    f1 = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="numba")
    assert all(_bits_equal(a, b) for a, b in zip(r1, f1))
    if t_next > 0:
        assert _bits_equal(heun_stage2(x_hat, *r1, base, aux, w, t_hat, t_next, impl="reference"),
                           heun_stage2(x_hat, *f1, base, aux, w, t_hat, t_next, impl="numba"))


def test_non_contiguous_inputs(rng):
    x_hat, base, aux = _inputs(rng, (6, 8), np.float32)
    xs, bs, as_ = x_hat[:, ::2], base[:, 1::2], aux.T[::2].T  # 6,4 strided views
    r = heun_stage1(xs, bs, as_, 1.5, 3.0, 2.0, impl="reference")
    f = heun_stage1(xs, bs, as_, 1.5, 3.0, 2.0, impl="numba")
    assert all(_bits_equal(a, b) for a, b in zip(r, f))


def test_inputs_are_checked(rng):
    x_hat, base, aux = _inputs(rng, (5,), np.float32)
    with pytest.raises(ValueError, match="dtype"):
        heun_stage1(x_hat, base, aux.astype(np.float64), 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="shapes"):
        heun_stage1(x_hat, base[:4], None, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="does not run on NumPy"):
        heun_stage1(x_hat, base, aux, 1.0, 2.0, 1.0, impl="cupy")
