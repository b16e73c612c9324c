"""kernels/heun.py: the fused guided Heun stages, checked bit for bit.

The reference must be exactly the arithmetic of minisims' own step (minisims.ops.heun_euler and
heun_correct: eq. 5 by sims_combine, then Algorithm 2's lines), and w = 0 / w = -1 exactly the
base / auxiliary model's unguided step, also where the other model's output holds inf, nan or
-0.0 (sims_combine's endpoint rule). The fused CuPy version is held to the reference bit for bit
in tests/gpu/test_kernels_gpu.py. Bits are compared with tobytes(), not a tolerance.

# S sample shape; w guidance weight; t_hat, t_next noise levels
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisims.kernels.heun import heun_stage1, heun_stage2
from minisims import ops

SHAPES = [(7,), (3, 2, 5, 7), (2, 3, 4, 4)]
WEIGHTS = [0.0, -1.0, 0.37, 2.5, -0.8, 7.0]
CPU = ["reference", "auto"]  # "auto" is the reference on NumPy arrays


def _bits_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _inputs(rng, shape, model_dtype):
    x_hat = rng.standard_normal(shape) * 3.0  # S, float64 state
    base = rng.standard_normal(shape).astype(model_dtype)  # S
    aux = rng.standard_normal(shape).astype(model_dtype)  # S
    return x_hat, base, aux


_sampler_step1 = ops.heun_euler  # what edm_sampler does on NumPy arrays
_sampler_step2 = ops.heun_correct


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
    assert all(_bits_equal(a, b) for a, b in zip(g1, a1))  # w = -1 selects aux, no arithmetic
    x_next, d_cur = b0
    _, base2, aux2 = _inputs(rng, (4, 3, 5, 5), np.float32)
    assert _bits_equal(heun_stage2(x_hat, x_next, d_cur, base2, aux2, 0.0, t_hat, t_next, impl=impl),
                       heun_stage2(x_hat, x_next, d_cur, base2, None, 0.0, t_hat, t_next, impl=impl))


@settings(max_examples=40, deadline=None)
@given(w=st.floats(-3, 10, allow_nan=False), t_hat=st.floats(0.002, 80),
       ratio=st.floats(0.0, 0.99), n=st.integers(1, 50), seed=st.integers(0, 2 ** 16),
       model32=st.booleans())
def test_reference_equals_the_seams_step_for_any_weight_and_levels(w, t_hat, ratio, n, seed, model32):
    """Python float levels, as the sampler passes them (the cases above use NumPy scalars)."""
    rng = np.random.default_rng(seed)
    x_hat, base, aux = _inputs(rng, (n,), np.float32 if model32 else np.float64)
    t_next = t_hat * ratio
    r1 = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="reference")
    f1 = _sampler_step1(x_hat, base, aux, w, t_hat, t_next)
    assert all(_bits_equal(a, b) for a, b in zip(r1, f1))
    if t_next > 0:
        assert _bits_equal(heun_stage2(x_hat, *r1, base, aux, w, t_hat, t_next, impl="reference"),
                           _sampler_step2(x_hat, *f1, base, aux, w, t_hat, t_next))


def _special(rng, shape, dtype, values):
    """Standard normal draws with inf, -inf, nan and -0.0 written into a third of the entries."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, flat.size // 3, replace=False)
    flat[idx] = rng.choice(values, idx.size)
    return a


@pytest.mark.parametrize("impl", CPU)
@pytest.mark.parametrize("model_dtype", [np.float32, np.float64])
def test_endpoints_with_non_finite_outputs(rng, impl, model_dtype):
    """w = 0 ignores aux even where it is inf or nan, w = -1 ignores base likewise; signed zeros
    of the chosen model are kept. Equal, bit for bit, to the plain step and to the unguided step
    of the chosen model. (Finite state: the samplers' x stays finite while D does.)"""
    specials = np.array([np.inf, -np.inf, np.nan, -0.0], model_dtype)
    shape = (3, 4, 5)
    x_hat = rng.standard_normal(shape) * 3.0
    x_hat.reshape(-1)[::5] = 0.0  # exact zeros in the state: x - (-0.0) and x - 0.0 differ in sign
    t_hat, t_next = np.float64(1.61), np.float64(1.2345)
    with np.errstate(invalid="ignore"):
        for w, chosen in ((0.0, "base"), (-1.0, "aux")):
            good = rng.standard_normal(shape).astype(model_dtype)
            good.reshape(-1)[::3] = -0.0
            bad = _special(rng, shape, model_dtype, specials)
            base, aux = (good, bad) if chosen == "base" else (bad, good)
            for wt in (float, np.float64, np.float32):
                got = heun_stage1(x_hat, base, aux, wt(w), t_hat, t_next, impl=impl)
                plain = _sampler_step1(x_hat, base, aux, wt(w), t_hat, t_next)
                alone = heun_stage1(x_hat, good, None, 0.0, t_hat, t_next, impl=impl)
                for g, p_, a in zip(got, plain, alone):
                    assert _bits_equal(g, p_) and _bits_equal(g, a), (impl, w, wt)
                out = heun_stage2(x_hat, *got, base, aux, wt(w), t_hat, t_next, impl=impl)
                ref = _sampler_step2(x_hat, *plain, base, aux, wt(w), t_hat, t_next)
                assert _bits_equal(out, ref), (impl, w, wt, "stage 2")


@pytest.mark.parametrize("impl", CPU)
def test_non_finite_outputs_between_the_endpoints_propagate_as_in_the_plain_step(rng, impl):
    specials = np.array([np.inf, -np.inf, np.nan, -0.0], np.float32)
    shape = (4, 6)
    x_hat = rng.standard_normal(shape)
    base, aux = (_special(rng, shape, np.float32, specials) for _ in range(2))
    with np.errstate(invalid="ignore"):
        for w in (0.37, np.float64(2.5), np.float32(-0.8)):
            got = heun_stage1(x_hat, base, aux, w, 2.0, 1.0, impl=impl)
            ref = _sampler_step1(x_hat, base, aux, w, np.float64(2.0), np.float64(1.0))
            for g, r in zip(got, ref):  # same positions of nan, same values and signs elsewhere
                assert np.array_equal(np.isnan(g), np.isnan(r))
                assert _bits_equal(np.where(np.isnan(g), 0, g), np.where(np.isnan(r), 0, r))


def test_non_contiguous_inputs(rng):
    x_hat, base, aux = _inputs(rng, (6, 8), np.float32)
    xs, bs, as_ = x_hat[:, ::2], base[:, 1::2], aux.T[::2].T  # 6,4 strided views
    r = heun_stage1(xs, bs, as_, 1.5, 3.0, 2.0, impl="reference")
    f = _sampler_step1(xs, bs, as_, 1.5, 3.0, 2.0)
    assert all(_bits_equal(a, b) for a, b in zip(r, f))


def test_inputs_are_checked(rng):
    x_hat, base, aux = _inputs(rng, (5,), np.float32)
    with pytest.raises(ValueError, match="dtype"):
        heun_stage1(x_hat, base, aux.astype(np.float64), 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="shapes"):
        heun_stage1(x_hat, base[:4], None, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="does not run on NumPy"):
        heun_stage1(x_hat, base, aux, 1.0, 2.0, 1.0, impl="cupy")
    with pytest.raises(ValueError, match="does not run on NumPy"):
        heun_stage1(x_hat, base, aux, 1.0, 2.0, 1.0, impl="numba")
