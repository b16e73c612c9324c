"""edm_sampler at the guidance endpoints: w = 0 and w = -1 reproduce the unguided base and aux
samplers bit for bit, even where the other model outputs inf, nan or -0.0 (sims_combine's
contract, kept by the seam's Heun step, minisims.ops); the aux model is called only inside the
guidance interval; a bad solver is refused. The GPU's fused Heun step is held to these same
lines in tests/gpu/test_kernels_gpu.py.

# S sample shape
"""
import numpy as np
import pytest

from minisims import ops
from minisims.diffusion import edm_sampler
from minisims.guidance import Guidance, GuidanceInterval

SHAPE = (4, 3, 5)


def _models(dtype):
    """Two cheap non-linear 'denoisers' returning the given dtype, like a float32 network."""
    def base(x, sigma):
        return (np.tanh(x) / (1.0 + sigma)).astype(dtype)

    def aux(x, sigma):
        return (0.5 * np.sin(x) / (1.0 + sigma) + 0.1 * x / (1.0 + sigma ** 2)).astype(dtype)
    return base, aux


@pytest.mark.parametrize("kw", [{}, dict(S_churn=10.0, S_min=0.05, S_max=20.0), dict(solver="euler")],
                         ids=["heun", "churn", "euler"])
def test_w0_and_w_minus1_reproduce_the_unguided_samplers(kw):
    base, aux = _models(np.float32)
    unguided_base = edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6, **kw)
    unguided_aux = edm_sampler(aux, SHAPE, np.random.default_rng(9), num_steps=6, **kw)
    w0 = edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6,
                     guidance=Guidance(aux, 0.0), **kw)
    w1 = edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6,
                     guidance=Guidance(aux, -1.0), **kw)
    assert w0.tobytes() == unguided_base.tobytes()
    assert w1.tobytes() == unguided_aux.tobytes()


def test_guidance_interval_skips_the_aux_model_outside_it():
    base, aux = _models(np.float32)
    calls = []

    def counting_aux(x, sigma):
        calls.append(float(sigma))
        return aux(x, sigma)

    g = Guidance(counting_aux, 2.0, GuidanceInterval(first_step=2, last_step=3))
    edm_sampler(base, SHAPE, np.random.default_rng(1), num_steps=6, guidance=g)
    assert len(calls) == 4  # steps 2 and 3, two Heun evaluations each


def test_unknown_solver_is_refused():
    base, _ = _models(np.float32)
    with pytest.raises(ValueError, match="solver"):
        edm_sampler(base, SHAPE, np.random.default_rng(1), solver="rk4")


def _poisoned(model, value):
    """model, with `value` (inf, -inf, nan or -0.0) written into a few output elements."""
    def f(x, sigma):
        out = model(x, sigma).copy()
        out.reshape(-1)[::7] = value
        return out
    return f


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, -0.0])
def test_endpoints_ignore_the_other_models_non_finite_outputs(value):
    """w = -1 with a base that outputs inf (or nan, -0.0) is the aux sampler exactly, and w = 0
    with such an aux is the base sampler."""
    base, aux = _models(np.float32)
    bad_base, bad_aux = _poisoned(base, value), _poisoned(aux, value)
    with np.errstate(invalid="ignore"):
        aux_only = edm_sampler(aux, SHAPE, np.random.default_rng(2), num_steps=6)
        base_only = edm_sampler(base, SHAPE, np.random.default_rng(2), num_steps=6)
        wm1 = edm_sampler(bad_base, SHAPE, np.random.default_rng(2), num_steps=6,
                          guidance=Guidance(aux, -1.0))
        assert wm1.tobytes() == aux_only.tobytes()
        # w = 0: the aux is not even called (the step's own arithmetic: the next test)
        w0 = edm_sampler(base, SHAPE, np.random.default_rng(2), num_steps=6,
                         guidance=Guidance(bad_aux, 0.0))
        assert w0.tobytes() == base_only.tobytes()


def test_step_at_w0_with_an_aux_output_is_the_base_step(rng):
    """The step itself (the sampler never hands it an aux at w = 0): aux's inf and nan ignored."""
    x_hat = rng.standard_normal(SHAPE)
    base = rng.standard_normal(SHAPE).astype(np.float32)
    aux = np.full(SHAPE, np.nan, np.float32)
    aux.reshape(-1)[::2] = np.inf
    got = ops.heun_euler(x_hat, base, aux, 0.0, np.float64(2.0), np.float64(1.5))
    ref = ops.heun_euler(x_hat, base, None, 0.0, np.float64(2.0), np.float64(1.5))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, ref))
    x_next, d_cur = ref
    got2 = ops.heun_correct(x_hat, x_next, d_cur, base, aux, 0.0, np.float64(2.0), np.float64(1.5))
    ref2 = ops.heun_correct(x_hat, x_next, d_cur, base, None, 0.0, np.float64(2.0), np.float64(1.5))
    assert got2.tobytes() == ref2.tobytes()
