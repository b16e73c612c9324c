"""edm_sampler's fused step (kernels/heun.py) against its plain step: the same samples, bit for
bit, with and without guidance, guidance intervals, churn, both solvers and both model dtypes,
and at the endpoints w = 0, w = -1 even with non-finite model outputs.

# S sample shape
"""
import numpy as np
import pytest

from minisims.diffusion import EDM, EDMPrecond, FusedStep
from minisims.diffusion.samplers import edm_sampler
from minisims.guidance import Guidance, GuidanceInterval
from minisims.nn import MLPConfig, MLPDenoiser
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair

SHAPE = (4, 3, 5)


def _models(dtype):
    """Two cheap non-linear 'denoisers' returning the given dtype, like a float32 network."""
    def base(x, sigma):
        return (np.tanh(x) / (1.0 + sigma)).astype(dtype)

    def aux(x, sigma):
        return (0.5 * np.sin(x) / (1.0 + sigma) + 0.1 * x / (1.0 + sigma ** 2)).astype(dtype)
    return base, aux


def fused_edm_sampler(denoise, shape, rng, impl="auto", **kw):
    return edm_sampler(denoise, shape, rng, step="fused", impl=impl, **kw)


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


def test_unknown_solver_and_step_are_refused():
    base, _ = _models(np.float32)
    with pytest.raises(ValueError, match="solver"):
        fused_edm_sampler(base, SHAPE, np.random.default_rng(1), solver="rk4")
    with pytest.raises(ValueError, match="step"):
        edm_sampler(base, SHAPE, np.random.default_rng(1), step="rk4")
    with pytest.raises(ValueError, match="step"):
        EDM(step="rk4")


def _poisoned(model, value):
    """model, with `value` (inf, -inf, nan or -0.0) written into a few output elements."""
    def f(x, sigma):
        out = model(x, sigma).copy()
        out.reshape(-1)[::7] = value
        return out
    return f


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, -0.0])
def test_endpoints_ignore_the_other_models_non_finite_outputs(impl, value):
    """w = -1 with a base that outputs inf (or nan, -0.0) is the aux sampler exactly, and w = 0
    with such an aux is the base sampler: plain and fused alike (sims_combine's contract)."""
    base, aux = _models(np.float32)
    bad_base, bad_aux = _poisoned(base, value), _poisoned(aux, value)
    with np.errstate(invalid="ignore"):
        aux_only = edm_sampler(aux, SHAPE, np.random.default_rng(2), num_steps=6)
        base_only = edm_sampler(base, SHAPE, np.random.default_rng(2), num_steps=6)
        for sample in (edm_sampler, lambda *a, **k: fused_edm_sampler(*a, impl=impl, **k)):
            wm1 = sample(bad_base, SHAPE, np.random.default_rng(2), num_steps=6,
                         guidance=Guidance(aux, -1.0))
            assert wm1.tobytes() == aux_only.tobytes()
            # w = 0: the aux is not even called (the step's own arithmetic: the next test)
            w0 = sample(base, SHAPE, np.random.default_rng(2), num_steps=6,
                        guidance=Guidance(bad_aux, 0.0))
            assert w0.tobytes() == base_only.tobytes()


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_fused_step_at_w0_with_an_aux_output_is_the_base_step(rng, impl):
    """The step itself (the sampler never hands it an aux at w = 0): aux's inf and nan ignored."""
    x_hat = rng.standard_normal(SHAPE)
    base = rng.standard_normal(SHAPE).astype(np.float32)
    aux = np.full(SHAPE, np.nan, np.float32)
    aux.reshape(-1)[::2] = np.inf
    step = FusedStep(impl)
    got = step.euler(x_hat, base, aux, 0.0, np.float64(2.0), np.float64(1.5))
    ref = step.euler(x_hat, base, None, 0.0, np.float64(2.0), np.float64(1.5))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, ref))


@pytest.mark.parametrize("w", [0.0, -1.0, 1.3])
def test_formulation_step_fused_equals_plain(w):
    """EDM(step="fused") through the formulation's own sample, with real MLP ensembles."""
    cfg = MLPConfig(hidden=8, depth=2, embedding="fourier", num_freqs=2)
    rng = np.random.default_rng(11)
    base, aux = MLPDenoiser(cfg, rng, ensemble=2), MLPDenoiser(cfg, rng, ensemble=2)
    outs = [EDM(precond=EDMPrecond(1.4), num_steps=5, S_churn=5.0, step=step).sample(
                base, (2, 6, 2), np.random.default_rng(12), aux=aux, w=w,
                interval=GuidanceInterval(first_step=1))
            for step in ("plain", "fused")]
    assert outs[0].tobytes() == outs[1].tobytes()



def test_shared_encoder_pair_samples_with_the_formulations_step():
    """SharedEncoderPair hands its two denoisers to the formulation's sampler: with step="fused"
    the samples are the plain step's, bit for bit, and the encoder pass is still shared."""
    rng = np.random.default_rng(13)
    cfg = UNetConfig(img_resolution=8, channels=4, channel_mult=(1, 2), blocks_per_level=1,
                     attn_resolutions=(), num_freqs=2, emb_mult=2, dropout=0.0)
    base = UNet(cfg, rng, dtype=np.float64)
    aux = base.copy()
    for name, mod, k in aux.named_parameters():  # a stand-in for decoder fine-tuning
        if name.startswith("decoder."):
            mod.params[k] += 0.1 * rng.standard_normal(mod.params[k].shape)
    outs, pairs = [], []
    for step in ("plain", "fused"):
        edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3, num_steps=3, step=step)
        pairs.append(SharedEncoderPair(edm, base, aux))
        outs.append(pairs[-1].sample((2, 3, 8, 8), np.random.default_rng(4), w=1.5))
    assert outs[0].tobytes() == outs[1].tobytes()
    assert pairs[1].encoder_passes == 2 * 3 - 1 and pairs[1].decoder_passes == 2 * (2 * 3 - 1)
