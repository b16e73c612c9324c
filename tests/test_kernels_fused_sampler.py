"""minisims/diffusion/fused_sampler.py against edm_sampler: the same samples, bit for bit, with
and without guidance, guidance intervals, churn, both solvers and both model dtypes.

# S sample shape
"""
import numpy as np
import pytest

from minisims.diffusion.fused_sampler import fused_edm_sampler
from minisims.diffusion.samplers import edm_sampler
from minisims.guidance import Guidance, GuidanceInterval

SHAPE = (4, 3, 5)


def _models(dtype):
    """Two cheap non-linear 'denoisers' returning the given dtype, like a float32 network."""
    def base(x, sigma):
        return (np.tanh(x) / (1.0 + sigma)).astype(dtype)

    def aux(x, sigma):
        return (0.5 * np.sin(x) / (1.0 + sigma) + 0.1 * x / (1.0 + sigma ** 2)).astype(dtype)
    return base, aux


def _pair(base, guidance, impl="auto", **kw):
    a = edm_sampler(base, SHAPE, np.random.default_rng(5), num_steps=8, guidance=guidance, **kw)
    b = fused_edm_sampler(base, SHAPE, np.random.default_rng(5), num_steps=8, guidance=guidance,
                          impl=impl, **kw)
    return a, b


GUIDES = {
    "none": None,
    "w0": 0.0,
    "w-1": -1.0,
    "w2.3-steps": (2.3, GuidanceInterval(first_step=3, last_step=5)),
    "w1.5-sigmas": (1.5, GuidanceInterval(sigma_lo=0.3, sigma_hi=5.0)),
    "w0.7": 0.7,
}
OPTIONS = {
    "heun": {},
    "churn": dict(S_churn=10.0, S_min=0.05, S_max=20.0),
    "euler": dict(solver="euler"),
}


def _guidance(spec, aux):
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return Guidance(aux, spec[0], spec[1])
    return Guidance(aux, spec)


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("guide", list(GUIDES))
def test_fused_sampler_equals_edm_sampler_bit_for_bit(guide, option, dtype, impl):
    base, aux = _models(dtype)
    a, b = _pair(base, _guidance(GUIDES[guide], aux), impl=impl, **OPTIONS[option])
    assert a.dtype == b.dtype == np.float64
    assert a.tobytes() == b.tobytes(), f"max |diff| {np.abs(a - b).max():.3e}"


def test_w0_and_w_minus1_reproduce_the_unguided_samplers():
    base, aux = _models(np.float32)
    unguided_base = edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6)
    unguided_aux = edm_sampler(aux, SHAPE, np.random.default_rng(9), num_steps=6)
    w0 = fused_edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6,
                           guidance=Guidance(aux, 0.0))
    w1 = fused_edm_sampler(base, SHAPE, np.random.default_rng(9), num_steps=6,
                           guidance=Guidance(aux, -1.0))
    assert w0.tobytes() == unguided_base.tobytes()
    assert w1.tobytes() == unguided_aux.tobytes()


def test_guidance_interval_skips_the_aux_model_outside_it():
    base, aux = _models(np.float32)
    calls = []

    def counting_aux(x, sigma):
        calls.append(float(sigma))
        return aux(x, sigma)

    g = Guidance(counting_aux, 2.0, GuidanceInterval(first_step=2, last_step=3))
    fused_edm_sampler(base, SHAPE, np.random.default_rng(1), num_steps=6, guidance=g)
    assert len(calls) == 4  # steps 2 and 3, two Heun evaluations each


def test_unknown_solver_is_refused():
    base, _ = _models(np.float32)
    with pytest.raises(ValueError, match="solver"):
        fused_edm_sampler(base, SHAPE, np.random.default_rng(1), solver="rk4")
