"""The guidance algebra: w = 0 is exactly the base model, w = -1 exactly the auxiliary model, the
combination is affine in w, the guidance interval switches the auxiliary model off, and guiding
never changes which random numbers a sampler draws. Checked for every sampler (EDM's Heun,
Euler and churn, DDPM; the GPU's fused Heun step in tests/gpu) and both formulations, with real (untrained) MLP ensembles and with analytic toy
models. sims_combine's contract (dtype, exact endpoints with non-finite inputs, a fresh array)
is checked as its docstring states it, and the samplers' calls are counted: where a step is not
guided (w = 0, outside the interval) the aux model is never called."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from minisims.diffusion import DDPM, EDM, EDMPrecond, VPPrecond, cosine_alpha_bar, ddpm_sampler, edm_sampler
from minisims.gradcheck import assert_close
from minisims.guidance import Guidance, GuidanceInterval, evaluate, sims_combine
from minisims.nn.mlp import MLPConfig, MLPDenoiser

finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
weights = st.floats(-3, 8, allow_nan=False)
# values with the awkward cases mixed in: infinities, nan and both signed zeros
special = st.one_of(st.sampled_from([np.inf, -np.inf, np.nan, -0.0, 0.0]),
                    st.floats(-1e6, 1e6, allow_nan=False, width=32))
w_types = st.sampled_from([float, np.float64, np.float32])


def _bits(a):
    return a.dtype, a.shape, a.tobytes()


@settings(max_examples=200, deadline=None)
@given(dt=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 12), data=st.data(),
       w_type=w_types, endpoint=st.sampled_from([0.0, -0.0, -1.0]))
def test_combine_endpoints_select_exactly(dt, n, data, w_type, endpoint):
    """w == 0: base's values exactly (aux's inf/nan ignored, -0.0 kept); w == -1: aux's exactly.
    The dtype is the arrays', whatever the type of w, and the result is a fresh array."""
    a = data.draw(arrays(dt, n, elements=special))
    b = data.draw(arrays(dt, n, elements=special))
    out = sims_combine(a, b, w_type(endpoint))
    assert _bits(out) == _bits(a if endpoint == 0 else b)  # bit for bit, nan and signs included
    assert not np.shares_memory(out, a) and not np.shares_memory(out, b)  # a copy, as documented


@settings(max_examples=200, deadline=None)
@given(dt=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 12), data=st.data(),
       w_type=w_types, w=weights.filter(lambda v: v not in (0.0, -1.0)))
def test_combine_elsewhere_is_eq5_in_the_arrays_dtype(dt, n, data, w_type, w):
    """Any other w: (1 + w) base - w aux with w a Python float (so float32 stays float32), IEEE
    arithmetic on non-finite values; a fresh array."""
    a = data.draw(arrays(dt, n, elements=special))
    b = data.draw(arrays(dt, n, elements=special))
    wf = float(w_type(w))
    if wf in (0.0, -1.0):  # np.float32 can round a weight onto an endpoint
        return
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 0 * inf: nan, as IEEE says
        out = sims_combine(a, b, w_type(w))
        ref = (1 + wf) * a - wf * b
    assert out.dtype == dt
    assert _bits(out) == _bits(ref)
    assert not np.shares_memory(out, a) and not np.shares_memory(out, b)


def test_combine_dtype_follows_the_arrays_and_shapes_must_match():
    a32, b64 = np.ones(3, np.float32), np.full(3, 2.0)
    for w in (0.0, -1.0, 0.5, np.float64(0.0), np.float64(0.5)):
        assert sims_combine(a32, b64, w).dtype == np.float64  # result_type of the arrays
        assert sims_combine(a32, a32, w).dtype == np.float32  # never promoted by a NumPy w
    with pytest.raises(ValueError, match="shape"):
        sims_combine(np.ones(3), np.ones((1, 3)), 0.5)


@given(arrays(np.float32, 8, elements=st.floats(-100, 100, width=32)),
       arrays(np.float32, 8, elements=st.floats(-100, 100, width=32)), weights, weights)
def test_combine_is_affine_in_w(a, b, w1, w2):
    a, b = a.astype(np.float64), b.astype(np.float64)
    # f(w) = a + w (a - b): the difference quotient is the same for any pair of weights
    f1, f2 = sims_combine(a, b, w1), sims_combine(a, b, w2)
    assert_close("f(w2) - f(w1)", f2 - f1, (w2 - w1) * (a - b), rtol=1e-9, atol=1e-9)
    assert_close("f(w) = a + w (a - b)", f1, a + w1 * (a - b), rtol=1e-9, atol=1e-9)


class RecordingRNG:
    """A numpy Generator that logs every draw, to compare the random streams of two samplers."""

    def __init__(self, seed):
        self.g = np.random.default_rng(seed)
        self.log = []

    def standard_normal(self, size=None, dtype=np.float64):
        self.log.append(("normal", tuple(np.atleast_1d(size))))
        return self.g.standard_normal(size, dtype=dtype)


def _toy_models():
    """Two different smooth analytic denoisers (for EDM) / eps models (for DDPM)."""
    base = lambda x, s: x * 0.9 / (1 + float(s) ** 2) + 0.1  # noqa: E731
    aux = lambda x, s: np.tanh(x) * 0.8 / (1 + 0.5 * float(s) ** 2)  # noqa: E731
    return base, aux


SAMPLERS = {
    "edm-heun": lambda m, rng, g: edm_sampler(m, (2, 5, 2), rng, num_steps=6, guidance=g),
    "edm-euler": lambda m, rng, g: edm_sampler(m, (2, 5, 2), rng, num_steps=6, solver="euler", guidance=g),
    "edm-churn": lambda m, rng, g: edm_sampler(m, (2, 5, 2), rng, num_steps=6, S_churn=5.0, S_min=0.05, S_max=50, guidance=g),
    "ddpm": lambda m, rng, g: ddpm_sampler(m, (2, 5, 2), rng, alpha_bar=cosine_alpha_bar(10), guidance=g),
}
NFE = {"edm-heun": 11, "edm-euler": 6, "edm-churn": 11, "ddpm": 9}


@pytest.mark.parametrize("name", list(SAMPLERS))
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), w=weights)
def test_every_sampler_endpoints_and_draws(name, seed, w):
    sample = SAMPLERS[name]
    base, aux = _toy_models()
    r_base, r_aux, r_w0, r_wm1, r_w = (RecordingRNG(seed) for _ in range(5))
    x_base = sample(base, r_base, None)
    x_aux = sample(aux, r_aux, None)
    assert np.array_equal(sample(base, r_w0, Guidance(aux, 0.0)), x_base)   # w = 0 is the base sampler
    assert np.array_equal(sample(base, r_wm1, Guidance(aux, -1.0)), x_aux)  # w = -1 is the aux sampler
    sample(base, r_w, Guidance(aux, w))
    assert r_w.log == r_base.log == r_w0.log  # guidance draws exactly what the unguided sampler draws


def _nets(rng, formulation):
    cfg = MLPConfig(hidden=8, depth=2, embedding="raw" if formulation == "ddpm" else "fourier", num_freqs=2)
    return MLPDenoiser(cfg, rng, ensemble=2), MLPDenoiser(cfg, rng, ensemble=2)


FORMULATIONS = {
    "ddpm": DDPM(T=8),
    "edm": EDM(precond=EDMPrecond(1.4), num_steps=5),
    "vp": EDM(precond=VPPrecond(), num_steps=5),
    "edm-euler": EDM(precond=EDMPrecond(1.4), num_steps=5, solver="euler"),
}


@pytest.mark.parametrize("name", list(FORMULATIONS))
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), w=weights)
def test_formulations_with_real_networks(name, seed, w):
    """The same properties through each formulation's own model call and sampler, with MLPs."""
    form = FORMULATIONS[name]
    base, aux = _nets(np.random.default_rng(seed), name)
    shape = (2, 6, 2)
    x_base = form.sample(base, shape, np.random.default_rng(seed))
    x_aux = form.sample(aux, shape, np.random.default_rng(seed))
    assert np.array_equal(form.sample(base, shape, np.random.default_rng(seed), aux=aux, w=0.0), x_base)
    assert np.array_equal(form.sample(base, shape, np.random.default_rng(seed), aux=aux, w=-1.0), x_aux)
    # the combined model output is affine in w, in each formulation's own prediction space
    x = np.random.default_rng(seed + 1).standard_normal(shape)
    level = 3 if name == "ddpm" else 0.7
    outs = [evaluate(form.model(base), Guidance(form.model(aux), v), x, level, 0, 0.7) for v in (0.0, 1.0, w)]
    assert_close("affine in w", outs[2], outs[0] + w * (outs[1] - outs[0]), rtol=1e-9, atol=1e-9)


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, x, level):
        self.calls.append(float(level))
        return self.f(x, level)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_w0_never_calls_the_aux_model(name):
    """w = 0 is the base sampler, so the aux model is not evaluated at all (no wasted NFE)."""
    base, aux = _toy_models()
    cb, ca = Counting(base), Counting(aux)
    x = SAMPLERS[name](cb, np.random.default_rng(3), Guidance(ca, 0.0))
    assert ca.calls == [] and len(cb.calls) == NFE[name]
    assert x.tobytes() == SAMPLERS[name](base, np.random.default_rng(3), None).tobytes()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_outside_the_interval_only_the_base_is_called(name):
    base, aux = _toy_models()
    cb, ca = Counting(base), Counting(aux)
    SAMPLERS[name](cb, np.random.default_rng(3), Guidance(ca, 1.5, GuidanceInterval(sigma_lo=1e9)))
    assert ca.calls == [] and len(cb.calls) == NFE[name]
    cb, ca = Counting(base), Counting(aux)  # and inside it, both models at every evaluation
    SAMPLERS[name](cb, np.random.default_rng(3), Guidance(ca, 1.5))
    assert ca.calls == cb.calls and len(cb.calls) == NFE[name]


@pytest.mark.parametrize("name", list(FORMULATIONS))
def test_formulation_at_w0_never_runs_the_aux_network(name, rng):
    base, aux = _nets(rng, name)
    calls = []
    forward = aux.forward
    aux.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    FORMULATIONS[name].sample(base, (2, 3, 2), rng, aux=aux, w=0.0)
    assert calls == []


def test_interval_by_steps_uses_only_base_outside():
    base, aux = _toy_models()
    cb, ca = Counting(base), Counting(aux)
    interval = GuidanceInterval(first_step=2, last_step=3)
    edm_sampler(cb, (1, 4, 2), np.random.default_rng(0), num_steps=6, guidance=Guidance(ca, 2.0, interval))
    # Heun: two evaluations per step (one at the last step); aux only in steps 2 and 3, both stages
    assert len(cb.calls) == 2 * 6 - 1
    assert len(ca.calls) == 4
    assert ca.calls == [cb.calls[i] for i in (4, 5, 6, 7)]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), w=weights)
def test_empty_interval_is_the_base_sampler(seed, w):
    base, aux = _toy_models()
    never = GuidanceInterval(sigma_lo=1e9)
    for name, sample in SAMPLERS.items():
        x_base = sample(base, np.random.default_rng(seed), None)
        x_g = sample(base, np.random.default_rng(seed), Guidance(Counting(aux), w, never))
        assert np.array_equal(x_g, x_base), name


def test_interval_by_sigma_same_choice_for_both_heun_stages():
    """A step whose starting sigma is inside guides both its evaluations, even if t_next is outside."""
    base, aux = _toy_models()
    cb, ca = Counting(base), Counting(aux)
    t = None
    from minisims.diffusion import edm_sigma_steps
    t = edm_sigma_steps(6)
    interval = GuidanceInterval(sigma_lo=t[3] - 1e-9, sigma_hi=t[2] + 1e-9)  # steps 2 and 3
    edm_sampler(cb, (1, 3, 2), np.random.default_rng(1), num_steps=6, guidance=Guidance(ca, 1.0, interval))
    assert ca.calls == [t[2], t[3], t[3], t[4]]


def test_ddpm_interval_counts_steps_from_the_noisiest():
    base, aux = _toy_models()
    cb, ca = Counting(base), Counting(aux)
    ddpm_sampler(cb, (1, 3, 2), np.random.default_rng(2), alpha_bar=cosine_alpha_bar(10),
                 guidance=Guidance(ca, 1.0, GuidanceInterval(first_step=0, last_step=1)))
    assert cb.calls == list(range(9, 0, -1))  # t = T-1 .. 1, T-1 network calls
    assert ca.calls == [9, 8]


def test_w_needs_an_aux_model(rng):
    base, _ = _nets(rng, "edm")
    with pytest.raises(ValueError, match="auxiliary"):
        FORMULATIONS["edm"].sample(base, (2, 3, 2), rng, w=1.0)
