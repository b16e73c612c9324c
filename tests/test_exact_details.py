"""Lines that only an exact value pins, found by mutation testing (docs/testing.md).

Each test checks a line against a closed form or an exact reference written here from the paper
or the format it implements (the cosine schedule, Ho et al.'s Algorithm 2 replayed draw by draw,
the per-run streams rebuilt from Philox words checked against Random123's known answers), not
against another path through the same code.
"""
import math

import numpy as np
import pytest

from minisims import streams
from minisims.diffusion import DDPM, cosine_alpha_bar, ddpm_betas, ddpm_sampler
from minisims.kernels.philox import philox4x32
from minisims.streams import RunGenerator, parse_seeds


# ------------------------------------------------------------------------------------------------
# The DDPM schedule and sampler
# ------------------------------------------------------------------------------------------------

def _nichol_dhariwal(T, s):
    """Improved DDPM eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2)."""
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T)]
    return np.array([v / f[0] for v in f])


@pytest.mark.parametrize("T,s", [(40, 0.008), (7, 0.2), (1000, 0.008)])
def test_the_cosine_schedule_is_nichol_and_dhariwal_eq_17(T, s):
    ab = cosine_alpha_bar(T, s)
    assert ab.dtype == np.float64 and ab.shape == (T,)
    np.testing.assert_allclose(ab, _nichol_dhariwal(T, s), rtol=1e-13, atol=0)


def test_the_defaults_are_the_toys_40_levels_with_s_0_008():
    np.testing.assert_array_equal(cosine_alpha_bar(), cosine_alpha_bar(40, 0.008))
    np.testing.assert_array_equal(DDPM().alpha_bar, cosine_alpha_bar(40, 0.008))
    # the formulation passes its own s on
    np.testing.assert_allclose(DDPM(T=7, s=0.2).alpha_bar, _nichol_dhariwal(7, 0.2), rtol=1e-13)


def test_betas_are_clipped_at_0_999_by_default():
    ab = np.array([1.0, 0.5, 0.0])  # the last step would need beta = 1
    np.testing.assert_array_equal(ddpm_betas(ab), [0.0, 0.5, 0.999])
    np.testing.assert_array_equal(ddpm_betas(ab, max_beta=0.9), [0.0, 0.5, 0.9])


def test_ddpm_needs_two_levels():
    DDPM(T=2)
    with pytest.raises(ValueError, match="DDPM needs T >= 2, got 1"):
        DDPM(T=1)


def _stub_eps(x, t):
    """A nonlinear epsilon prediction, so that the posterior mean's every term shows."""
    return np.tanh(x * (1 + 0.1 * t)) + 0.05 * t  # S


def test_ddpm_sampler_is_ho_et_al_algorithm_2_replayed_draw_by_draw():
    """x_{T-1} ~ N(0, I); for t = T-1..1: x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)
    + sqrt(beta_t) z with z ~ N(0, I), and z = 0 on the last step."""
    T, shape = 6, (5, 2)
    ab = cosine_alpha_bar(T)
    out = ddpm_sampler(_stub_eps, shape, np.random.default_rng(3), alpha_bar=ab)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    for t in range(T - 1, 0, -1):
        beta = 1 - ab[t] / ab[t - 1]
        x = (x - beta / math.sqrt(1 - ab[t]) * _stub_eps(x, t)) / math.sqrt(1 - beta)
        if t > 1:
            x = x + math.sqrt(beta) * rng.standard_normal(shape)
    np.testing.assert_allclose(out, x, rtol=1e-12, atol=1e-12)
    assert out.dtype == np.float64


def test_ddpm_sampler_reports_progress_only_when_asked(capsys):
    T = 5
    ab = cosine_alpha_bar(T)
    ddpm_sampler(_stub_eps, (3, 2), np.random.default_rng(0), alpha_bar=ab)
    DDPM(T=T).sample_with(_stub_eps, None, (3, 2), np.random.default_rng(0))
    assert capsys.readouterr().err == ""
    ddpm_sampler(_stub_eps, (3, 2), np.random.default_rng(0), alpha_bar=ab, progress=True)
    # not on a terminal, the bar is one line when the work is done: its label and its total
    assert f"ddpm: 100% ({T - 1}/{T - 1} it)" in capsys.readouterr().err
    DDPM(T=T).sample_with(_stub_eps, None, (3, 2), np.random.default_rng(0), progress=True)
    assert f"ddpm: 100% ({T - 1}/{T - 1} it)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Per-run streams, rebuilt from Philox words (philox4x32 is checked against Random123's answers
# in tests/test_streams.py)
# ------------------------------------------------------------------------------------------------

KEY = (0x12345678, 0x9ABCDEF0)
RUNS = [0, 5, 2 ** 32 - 1]


def _words(call, run, n):
    """Word p of draw number ``call`` of run ``run``: word p % 4 of philox((p // 4, call, run, 0))."""
    blocks = philox4x32((np.arange(-(-n // 4), dtype=np.uint64), call, run, 0), KEY)  # 4 x B
    return [int(blocks[p % 4][p // 4]) for p in range(n)]


def _double(hi, lo):
    """NumPy's 53-bit double from two 32-bit words: ((hi >> 5) 2^26 + (lo >> 6)) / 2^53."""
    return ((hi >> 5) * 2 ** 26 + (lo >> 6)) / 2 ** 53


def test_per_run_uniforms_are_53_bit_doubles_and_24_bit_floats_of_the_philox_words():
    g = RunGenerator(KEY, RUNS, numpy=True)
    u = g.random((3, 5))  # call 0
    f = g.random((3, 4), dtype=np.float32)  # call 1
    assert u.dtype == np.float64 and f.dtype == np.float32
    for i, r in enumerate(RUNS):
        w = _words(0, r, 10)
        assert u[i].tolist() == [_double(w[2 * k], w[2 * k + 1]) for k in range(5)]
        assert f[i].tolist() == [(v >> 8) / 2 ** 24 for v in _words(1, r, 4)]


def test_per_run_normals_are_box_muller_on_the_philox_doubles():
    g = RunGenerator(KEY, RUNS, numpy=True)
    g.random((3, 1))  # call 0: the normals below are call 1
    z = g.standard_normal((3, 5))
    z32 = g.standard_normal((3, 3), dtype=np.float32)  # call 2
    assert z.dtype == np.float64 and z32.dtype == np.float32
    for i, r in enumerate(RUNS):
        for out, call, m in ((z[i], 1, 5), (z32[i], 2, 3)):
            w, ref = _words(call, r, 4 * -(-m // 2)), []
            for k in range(-(-m // 2)):
                u1 = 1.0 - _double(w[4 * k], w[4 * k + 1])
                u2 = _double(w[4 * k + 2], w[4 * k + 3])
                rad = math.sqrt(-2 * math.log(u1))
                ref += [rad * math.cos(2 * math.pi * u2), rad * math.sin(2 * math.pi * u2)]
            np.testing.assert_allclose(out, np.array(ref[:m]).astype(out.dtype), rtol=1e-15, atol=0)


def test_per_run_integers_are_multiply_and_shift_of_the_philox_words():
    g = RunGenerator(KEY, RUNS, numpy=True)
    a = g.integers(1, 40, size=(3, 6))  # call 0
    b = g.integers(7, size=(3, 2))      # call 1: high omitted means [0, 7)
    full = g.integers(0, 2 ** 32, size=(3, 2))  # call 2: the widest span, the words themselves
    for i, r in enumerate(RUNS):
        assert a[i].tolist() == [1 + (v * 39 >> 32) for v in _words(0, r, 6)]
        assert b[i].tolist() == [v * 7 >> 32 for v in _words(1, r, 2)]
        assert full[i].tolist() == _words(2, r, 2)
    for bad in ((3, 3), (0, 2 ** 32 + 1)):
        with pytest.raises(ValueError, match="0 < high - low <= 2"):
            g.integers(*bad, size=(3, 1))


def test_a_run_generator_counts_its_calls_from_zero_one_by_one():
    g = RunGenerator(KEY, [4], numpy=True)
    assert g.calls == 0 and g.numpy is True and isinstance(g._runs, np.ndarray)
    for call in range(3):
        assert g.words(2).tolist() == [_words(call, 4, 2)]
    assert g.calls == 3
    g.calls = 2 ** 32 - 1  # the last counter word is still a draw ...
    g.words(1)
    with pytest.raises(RuntimeError, match=r"ran out of draw counters \(2\^32 calls\)"):
        g.words(1)  # ... and then there is none


def test_run_indices_are_32_bit_words():
    RunGenerator(KEY, [0, 2 ** 32 - 1], numpy=True)
    for runs in ([], [-1], [2 ** 32], [0, 2 ** 32], [-1, 3]):
        with pytest.raises(ValueError, match=r"runs must be a non-empty list of indices in \[0, 2\^32\)"):
            RunGenerator(KEY, runs, numpy=True)


def test_a_draw_size_may_be_an_int_for_one_run():
    g = RunGenerator(KEY, [9], numpy=True)
    assert g.random(1).shape == (1,)
    with pytest.raises(ValueError, match=r"run axis \(1 runs\) first, got shape \(2,\)"):
        g.random(2)


def test_seeds_reach_two_to_the_32_minus_one():
    assert parse_seeds("4294967295") == [2 ** 32 - 1]
    assert parse_seeds(" 1, 3-4 ") == [1, 3, 4]
    with pytest.raises(ValueError, match="4294967296 is above the largest seed, 2"):
        parse_seeds("4294967290-4294967296")


def test_the_seed_count_limit_is_inclusive(monkeypatch):
    monkeypatch.setattr(streams, "MAX_SEEDS", 5)
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("10,20-23") == [10, 20, 21, 22, 23]
    assert parse_seeds("7-11") == [7, 8, 9, 10, 11]
    for text in ("0-5", "10,20-24", "1,2,3,4,5,6"):
        with pytest.raises(ValueError, match="more than 5 seeds"):
            parse_seeds(text)


# ------------------------------------------------------------------------------------------------
# The DDPM formulation passes every argument on
# ------------------------------------------------------------------------------------------------

def _aux_eps(x, t):
    return 0.5 * np.tanh(x) - 0.02 * t  # S


def test_ddpm_sample_with_passes_the_interval_and_defaults_to_w_0():
    from minisims.guidance import Guidance, GuidanceInterval
    f, shape = DDPM(T=8), (4, 2)
    run = lambda **kw: f.sample_with(_stub_eps, _aux_eps, shape, np.random.default_rng(1), **kw)
    np.testing.assert_array_equal(run(), f.sample_with(_stub_eps, None, shape, np.random.default_rng(1)))
    interval = GuidanceInterval(first_step=1, last_step=3)
    want = ddpm_sampler(_stub_eps, shape, np.random.default_rng(1), alpha_bar=f.alpha_bar,
                        guidance=Guidance(_aux_eps, 2.0, interval))
    got = run(w=2.0, interval=interval)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, run(w=2.0))  # the interval leaves some steps unguided


class _Stub:
    """A network with forward/backward, recording what it was fed; ``scale`` makes an aux unlike
    the base (with the same network eq. 5 gives the base at every w)."""

    def __init__(self, scale=1.0):
        self.seen, self.scale = [], scale

    def forward(self, x, c):
        c = np.asarray(c) if isinstance(c, float) else c  # the sampler passes a float t
        self.seen.append((x.dtype, c.dtype, x.shape, c.shape))
        return np.tanh(self.scale * x) * (1 + 0.01 * c.reshape(c.shape + (1,) * (x.ndim - c.ndim)))

    def backward(self, dy):
        return ()


def test_ddpm_sample_passes_the_interval_progress_and_on_step(capsys):
    from minisims.guidance import GuidanceInterval
    f, shape, net, aux = DDPM(T=6), (1, 3, 2), _Stub(), _Stub(0.5)
    interval = GuidanceInterval(first_step=1, last_step=2)
    steps = []
    got = f.sample(net, shape, np.random.default_rng(2), aux=aux, w=1.5, interval=interval,
                   progress=True, on_step=lambda i, x, t: steps.append((i, t)))
    want = f.sample_with(f.model(net), f.model(aux), shape, np.random.default_rng(2), w=1.5,
                         interval=interval)
    np.testing.assert_array_equal(got, want)
    assert steps == [(i, f.T - 1 - i) for i in range(f.T)]
    assert not np.array_equal(got, f.sample(net, shape, np.random.default_rng(2), aux=aux, w=1.5))
    assert f"ddpm: 100% ({f.T - 1}/{f.T - 1} it)" in capsys.readouterr().err
    f.sample(net, shape, np.random.default_rng(2))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("member_ndim,data_ndim,shape", [(1, 1, (3, 5, 2)), (1, 2, (3, 5, 4, 2)),
                                                          (0, 1, (5, 2))])
def test_the_ddpm_loss_keeps_members_samples_and_float32_apart(member_ndim, data_ndim, shape):
    """x_t = sqrt(ab_t) y + sqrt(1 - ab_t) eps with t per sample; the loss is one number per
    member, and float32 data stays float32 through the network."""
    f = DDPM(T=10, member_ndim=member_ndim, data_ndim=data_ndim)
    y = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    net = _Stub()
    loss = f.loss_and_grad(net, y, np.random.default_rng(4))
    assert loss.shape == shape[:member_ndim] and loss.dtype == np.float32
    x_dtype, c_dtype, x_shape, c_shape = net.seen[0]
    assert (x_dtype, c_dtype) == (np.float32, np.float32)
    assert x_shape == shape and c_shape == shape[:len(shape) - data_ndim]


# ------------------------------------------------------------------------------------------------
# The toy MLP and its layers
# ------------------------------------------------------------------------------------------------

def test_relu_is_max_of_x_and_0_with_zero_slope_at_0():
    from minisims.nn.layers import ReLU
    r = ReLU()
    x = np.array([-2.0, -0.0, 0.0, 0.25, 1.0, 3.0])
    np.testing.assert_array_equal(r.forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(r.backward(np.ones_like(x))[0], [0, 0, 0, 1, 1, 1])  # PyTorch's at 0


@pytest.mark.parametrize("embedding", ["raw", "fourier"])
def test_a_float32_mlp_stays_float32_whatever_its_noise_level_is_given_as(embedding):
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    cfg = MLPConfig(embedding=embedding, num_freqs=3, hidden=8, depth=1)
    net = MLPDenoiser(cfg, np.random.default_rng(0), ensemble=2)
    assert net.net.layers[0].params["W"].shape[-2:] == (2 + (1 if embedding == "raw" else 6), 8)
    x = np.zeros((2, 5, 2), np.float32)
    for c in (0.3, np.full((2, 5), 0.3), np.float64(0.3)):
        assert net.forward(x, c).dtype == np.float32
    single = MLPDenoiser(cfg, np.random.default_rng(0))
    assert single.sample_shape(7) == (7, 2) and net.sample_shape(7) == (2, 7, 2)


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------

def test_w2_of_a_gaussian_with_itself_is_zero_not_nan():
    """Rounding can leave Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2) a hair below 0, and S1 S2 an
    eigenvalue a hair below 0, for a singular covariance: both are clipped to 0."""
    from minisims.metrics import gaussian_w2_from_moments
    rng = np.random.default_rng(0)
    for _ in range(50):  # unclipped, 35 of these 50 give a negative eigenvalue and 32 a negative d2
        v = rng.standard_normal((3, 1))
        S = v @ v.T  # rank 1: eigenvalues of S S include rounding-size ones of either sign
        mu = rng.standard_normal(3)
        d2 = gaussian_w2_from_moments(mu, S, mu, S, squared=True)
        assert np.isfinite(d2) and 0 <= d2 < 1e-12


def test_moments_are_float64_and_gaussian_w2_takes_squared():
    from minisims.metrics import gaussian_w2, moments
    x = np.random.default_rng(0).standard_normal((2, 50, 2)).astype(np.float32)
    mu, S = moments(x)
    assert mu.dtype == np.float64 and S.dtype == np.float64
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(mu, x64.mean(1))
    mean, cov = [1, 0], [[2, 0], [0, 1]]
    w = gaussian_w2(x, mean, cov)
    np.testing.assert_allclose(gaussian_w2(x, mean, cov, squared=True), w ** 2, rtol=1e-12)
    # the closed form, one run at a time: |mu - m|^2 + Tr S + Tr C - 2 Tr (C^1/2 S C^1/2)^1/2
    from scipy.linalg import sqrtm
    for r in range(2):
        C = np.array(cov, float)
        d2 = ((mu[r] - mean) ** 2).sum() + np.trace(S[r]) + np.trace(C) \
            - 2 * np.trace(sqrtm(sqrtm(C) @ S[r] @ sqrtm(C))).real
        np.testing.assert_allclose(w[r], math.sqrt(d2), rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# The restricted unpickler's messages name what it refused
# ------------------------------------------------------------------------------------------------

def test_the_unpickler_names_the_refused_global_and_the_allowed_ones():
    import io
    import pickle
    from minisims.data.safe_pickle import ForbiddenGlobal, RestrictedUnpickler
    data = pickle.dumps(io.BytesIO)
    with pytest.raises(ForbiddenGlobal) as e:
        RestrictedUnpickler(io.BytesIO(data)).load()
    assert str(e.value) == ("refused to load the global _io.BytesIO: only numpy._core.multiarray._reconstruct, "
                            "numpy.core.multiarray._reconstruct, numpy.dtype, numpy.ndarray are allowed")


def test_the_unpickler_reconstructs_only_the_empty_placeholder():
    import pickle
    from minisims.data.safe_pickle import _reconstruct
    a = _reconstruct(np.ndarray, (0,), b"b")
    assert type(a) is np.ndarray and a.shape == (0,) and a.dtype == np.int8  # dtype 'b' passed on
    with pytest.raises(pickle.UnpicklingError, match=r"^_reconstruct\(ndarray, \(5,\), \.\.\.\) is not the empty"):
        _reconstruct(np.ndarray, (5,), b"b")
    with pytest.raises(pickle.UnpicklingError, match=r"^_reconstruct\(matrix, \(0,\), \.\.\.\) is not the empty"):
        _reconstruct(np.matrix, (0,), b"b")
    with pytest.raises(pickle.UnpicklingError, match=r"^_reconstruct\(7, \(0,\), \.\.\.\) is not the empty"):
        _reconstruct(7, (0,), b"b")


# ------------------------------------------------------------------------------------------------
# The seam (minisims.ops): its references against their definitions, and where it hands over
# ------------------------------------------------------------------------------------------------

def _group_norm_definition(x, gamma, beta, G, eps, bias, silu):
    """Wu & He (2018): normalise each group of C/G channels of x + bias over (C/G, H, W)."""
    u = x if bias is None else x + bias[:, :, None, None]
    N, C, H, W = x.shape
    out = np.empty_like(u)
    for n in range(N):
        for g in range(G):
            grp = u[n, g * C // G:(g + 1) * C // G]
            out[n, g * C // G:(g + 1) * C // G] = (grp - grp.mean()) / np.sqrt(grp.var() + eps)
    z = gamma[:, None, None] * out + beta[:, None, None]
    return z / (1 + np.exp(-z)) if silu else z


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_the_group_norm_reference_is_wu_and_he(silu, with_bias, monkeypatch):
    from minisims import ops
    monkeypatch.setattr(ops, "FAST", False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 3, 4)) * 0.3
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    bias = rng.standard_normal((2, 6)) if with_bias else None
    kw = {} if not silu else {"silu": True}  # the default is no SiLU
    y, cache = ops.group_norm(x, gamma, beta, 3, 0.5, bias, **kw)  # eps large enough to show
    np.testing.assert_allclose(y, _group_norm_definition(x, gamma, beta, 3, 0.5, bias, silu),
                               rtol=1e-12, atol=1e-13)
    dx, dgamma, dbeta, dbias = ops.group_norm_backward(np.ones_like(y), cache, gamma, beta)
    if with_bias:  # x + bias: the bias's gradient is the input's, summed over the pixels
        np.testing.assert_allclose(dbias, dx.sum(axis=(2, 3)), rtol=1e-12)
    else:
        assert dbias is None


@pytest.mark.parametrize("fast,fuse,dtype,path", [
    (True, None, np.float32, "fused"), (True, None, np.float64, "ref"),
    (True, False, np.float32, "ref"), (True, True, np.float64, "fused"),
    (False, None, np.float32, "ref"), (False, True, np.float32, "ref")])
def test_the_seam_picks_the_group_norm_kernel_by_dtype_and_flags(fast, fuse, dtype, path, monkeypatch):
    """The fused kernel runs for float32 by default (FUSE_GROUP_NORM None), as the flag says
    otherwise, and never with the fast paths off."""
    from minisims import ops
    monkeypatch.setattr(ops, "FAST", fast)
    monkeypatch.setattr(ops, "FUSE_GROUP_NORM", fuse)
    x = np.random.default_rng(0).standard_normal((1, 4, 2, 2)).astype(dtype)
    _, cache = ops.group_norm(x, np.ones(4, dtype), np.zeros(4, dtype), 2, 1e-5)
    assert cache[0] == path


def test_the_seam_hands_the_heun_step_to_the_kernel_only_for_device_arrays(monkeypatch):
    """NumPy arrays take the reference lines; other arrays (CuPy's) go to kernels/heun.py with
    every argument in order. A stand-in array module plays the device here."""
    from minisims import backend, ops
    from minisims.kernels import heun
    calls = []
    monkeypatch.setattr(heun, "heun_stage1", lambda *a: calls.append(("stage1",) + a) or (1, 2))
    monkeypatch.setattr(heun, "heun_stage2", lambda *a: calls.append(("stage2",) + a) or 3)
    x = np.ones(3)
    ops.heun_euler(x, x, x, 0.5, 2.0, 1.0)
    ops.heun_correct(x, x, x, x, x, 0.5, 2.0, 1.0)
    assert calls == []  # NumPy: the reference lines
    device = object()
    monkeypatch.setattr(backend, "xp", lambda a=None: device)
    assert ops.heun_euler("xh", "b", "a", 0.5, 2.0, 1.0) == (1, 2)
    assert ops.heun_correct("xh", "xn", "d", "b", "a", 0.5, 2.0, 1.0) == 3
    assert calls == [("stage1", "xh", "b", "a", 0.5, 2.0, 1.0),
                     ("stage2", "xh", "xn", "d", "b", "a", 0.5, 2.0, 1.0)]
    calls.clear()
    monkeypatch.setattr(ops, "FAST", False)
    with pytest.raises(Exception):
        ops.heun_euler("xh", "b", "a", 0.5, 2.0, 1.0)  # the reference lines, on strings
    assert calls == []


def test_the_softmax_reference_survives_large_and_mixed_scale_logits(monkeypatch):
    """Softmax is shift invariant; the reference subtracts each row's own max so exp stays finite:
    a row at 1000 next to a row at 0 must both come out right."""
    from minisims import ops
    monkeypatch.setattr(ops, "FAST", False)
    S = np.array([[[0.0, 1.0, 2.0], [1000.0, 1001.0, 1002.0]]])  # N=1, I=2, J=3
    A = ops.softmax(S.copy(), 1.0)
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(A, np.broadcast_to(e / e.sum(), (1, 2, 3)), rtol=1e-14)


def test_the_conv_input_gradient_defaults_to_stride_1_no_padding():
    """<conv2d(x, W), dy> = <x, conv2d_backward_input(dy, W, x.shape)> with the defaults."""
    from minisims import ops
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    y = ops.conv2d(x, W, np.zeros(4))
    assert y.shape == (2, 4, 4, 3)
    dy = rng.standard_normal(y.shape)
    dx = ops.conv2d_backward_input(dy, W, x.shape)
    np.testing.assert_allclose((y * dy).sum(), (x * dx).sum(), rtol=1e-12)


def test_silu_is_x_times_the_logistic_sigmoid():
    from minisims.nn.layers import SiLU
    x = np.array([-30.0, -1.0, 0.0, 0.5, 4.0])
    np.testing.assert_allclose(SiLU().forward(x), x / (1 + np.exp(-x)), rtol=1e-15, atol=0)


def test_the_ema_takes_exactly_one_of_beta_and_half_life():
    from minisims.train import EMA
    for kw in ({}, {"beta": 0.9, "half_life_steps": 10}):
        with pytest.raises(ValueError, match="^give exactly one of beta, half_life_steps$"):
            EMA({"w": np.zeros(2)}, **kw)


# ------------------------------------------------------------------------------------------------
# The EDM sampler and formulation
# ------------------------------------------------------------------------------------------------

def _denoise(x, sigma):
    return np.tanh(x) / (1 + sigma)  # S


def _aux_denoise(x, sigma):
    return 0.8 * np.tanh(x) / (1 + sigma)  # S


def test_edm_sigma_steps_defaults_and_the_smallest_count():
    from minisims.diffusion import edm_sigma_steps
    np.testing.assert_array_equal(edm_sigma_steps(), edm_sigma_steps(18, 0.002, 80.0, 7.0))
    assert len(edm_sigma_steps()) == 19 and edm_sigma_steps().dtype == np.float64
    np.testing.assert_allclose(edm_sigma_steps(2, 0.002, 80.0), [80.0, 0.002, 0.0], rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="^num_steps must be >= 2, got 1$"):
        edm_sigma_steps(1)


def test_the_edm_sampler_visits_the_levels_of_its_rho_and_defaults_to_table_1(capsys):
    from minisims.diffusion import edm_sampler, edm_sigma_steps
    seen = []
    edm_sampler(_denoise, (3,), np.random.default_rng(0), num_steps=5, rho=3.0,
                on_step=lambda i, x, t: seen.append(t))
    np.testing.assert_array_equal(seen, edm_sigma_steps(5, 0.002, 80.0, 3.0))
    table1 = dict(num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0,
                  S_max=math.inf, S_noise=1.0)
    a = edm_sampler(_denoise, (4, 2), np.random.default_rng(1))
    np.testing.assert_array_equal(a, edm_sampler(_denoise, (4, 2), np.random.default_rng(1), **table1))
    # churn on: the window's default lower end is 0, so every level churns
    b = edm_sampler(_denoise, (4, 2), np.random.default_rng(1), num_steps=6, S_churn=5.0)
    np.testing.assert_array_equal(b, edm_sampler(_denoise, (4, 2), np.random.default_rng(1),
                                                 num_steps=6, S_churn=5.0, S_min=0.0))
    assert capsys.readouterr().err == ""  # no progress unless asked
    edm_sampler(_denoise, (2,), np.random.default_rng(1), num_steps=4, progress=True)
    assert "heun: 100% (4/4 it)" in capsys.readouterr().err


def test_the_edm_formulation_passes_every_sampler_setting_on(capsys):
    from minisims.diffusion import EDM, edm_sampler
    from minisims.guidance import Guidance, GuidanceInterval
    kw = dict(num_steps=5, sigma_min=0.01, sigma_max=20.0, rho=4.0, solver="heun", S_churn=3.0,
              S_min=0.05, S_max=10.0, S_noise=1.01)
    f, shape, interval = EDM(**kw), (3, 2), GuidanceInterval(sigma_lo=0.1, sigma_hi=5.0)
    got = f.sample_with(_denoise, _aux_denoise, shape, np.random.default_rng(5), w=0.7,
                        interval=interval, progress=True)
    want = edm_sampler(_denoise, shape, np.random.default_rng(5),
                       guidance=Guidance(_aux_denoise, 0.7, interval), **kw)
    np.testing.assert_array_equal(got, want)
    assert "heun: 100% (5/5 it)" in capsys.readouterr().err
    plain = f.sample_with(_denoise, None, shape, np.random.default_rng(5))
    np.testing.assert_array_equal(f.sample_with(_denoise, _aux_denoise, shape, np.random.default_rng(5)), plain)
    assert capsys.readouterr().err == ""


def test_edm_sample_passes_the_interval_progress_and_on_step(capsys):
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.guidance import GuidanceInterval
    net, aux = _Stub(), _Stub(0.5)
    net.dtype = aux.dtype = np.float32
    f = EDM(precond=EDMPrecond(0.5), num_steps=4)
    interval, steps = GuidanceInterval(first_step=1, last_step=2), []
    got = f.sample(net, (1, 3, 2), np.random.default_rng(2), aux=aux, w=1.5, interval=interval,
                   progress=True, on_step=lambda i, x, t: steps.append(i))
    assert "heun: 100% (4/4 it)" in capsys.readouterr().err
    want = f.sample_with(f.model(net), f.model(aux), (1, 3, 2), np.random.default_rng(2), w=1.5,
                         interval=interval)
    np.testing.assert_array_equal(got, want)
    assert steps == [0, 1, 2, 3, 4]
    assert not np.array_equal(got, f.sample(net, (1, 3, 2), np.random.default_rng(2), aux=aux, w=1.5))
    assert all(seen[:2] == (np.float32, np.float64) for seen in net.seen)  # F is fed in its dtype
    f.sample(net, (1, 3, 2), np.random.default_rng(2))
    assert capsys.readouterr().err == ""


def test_edm_scaling_score_and_nfe():
    from minisims.diffusion import EDM, EDMPrecond
    f = EDM(precond=EDMPrecond(0.5), num_steps=7)
    assert f.scaling(0.3) == (1.0, 0.3)
    assert f.nfe() == 13 and EDM(num_steps=7, solver="euler").nfe() == 7
    net, aux = _Stub(), _Stub(0.5)
    net.dtype = aux.dtype = np.float64
    x = np.random.default_rng(0).standard_normal((1, 4, 2))
    D = f.model(net)(x, 0.7)
    np.testing.assert_allclose(f.score(net, x, 0.7), (D - x) / 0.7 ** 2, rtol=1e-14)
    np.testing.assert_array_equal(f.score(net, x, 0.7, aux=aux), f.score(net, x, 0.7))  # w = 0


def test_the_edm_loss_gradient_keeps_the_networks_dtype():
    from minisims.diffusion import EDM

    class Rec(_Stub):
        def backward(self, dy):
            self.dy = dy
            return ()
    net = Rec()
    y = np.random.default_rng(0).standard_normal((2, 8, 2)).astype(np.float32)
    EDM().loss_and_grad(net, y, np.random.default_rng(1))
    assert net.dy.dtype == np.float32 and net.seen[0][:2] == (np.float32, np.float32)


# ------------------------------------------------------------------------------------------------
# Training details and the FD's statistics files
# ------------------------------------------------------------------------------------------------

def test_hflip_mirrors_exactly_the_images_whose_draw_is_below_a_half():
    from minisims.train import _hflip
    y = np.arange(8 * 1 * 2 * 3, dtype=np.float32).reshape(8, 1, 2, 3)
    out = _hflip(y, np.random.default_rng(3))
    flip = np.random.default_rng(3).random(8) < 0.5
    assert 0 < flip.sum() < 8
    for b in range(8):
        np.testing.assert_array_equal(out[b], y[b, :, :, ::-1] if flip[b] else y[b])


def test_fd_from_stats_computes_in_float64_and_checks_every_shape():
    from minisims.metrics import fd_from_stats
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    mu1, mu2 = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    S1, S2 = (A @ A.T).astype(np.float32), (B @ B.T).astype(np.float32)
    f64 = fd_from_stats(*(a.astype(np.float64) for a in (mu1, S1, mu2, S2)))
    for args in ((mu1, S1, mu2, S2), (mu1.astype(np.float64), S1, mu2, S2),
                 (mu1, S1, mu2.astype(np.float64), S2), (mu1, S1.astype(np.float64), mu2, S2),
                 (mu1, S1, mu2, S2.astype(np.float64))):
        assert fd_from_stats(*args) == f64
    for bad in ((mu1, S1, mu2[:2], S2), (mu1, S1, mu2, S2[:2, :2]), (mu1[:2], S1, mu2[:2], S2)):
        with pytest.raises(ValueError, match="^statistics do not match: mu"):
            fd_from_stats(*bad)


def test_feature_stats_needs_two_rows_of_any_width():
    from minisims.metrics import feature_stats
    mu, S = feature_stats(np.array([[1.0], [3.0]]))  # n = 2, D = 1
    assert mu.tolist() == [2.0] and S.tolist() == [[2.0]]
    for bad in (np.zeros((1, 3)), np.zeros(5), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match=r"^feature_stats needs features \(n,D\) with n >= 2, got"):
            feature_stats(bad)


def test_statistics_files_round_trip_with_provenance_and_refuse_pickles(tmp_path):
    import json
    from minisims.metrics import load_stats, save_stats
    p = tmp_path / "s.npz"
    save_stats(str(p), np.float32([1, 2]), np.eye(2, dtype=np.float32), {"made_by": "test", "n": 3})
    with np.load(p) as f:
        assert sorted(f.files) == ["mu", "provenance", "sigma"]
        assert f["mu"].dtype == np.float64 and f["sigma"].dtype == np.float64
        assert json.loads(str(f["provenance"])) == {"made_by": "test", "n": 3}
    mu, sigma = load_stats(str(p))
    assert mu.tolist() == [1.0, 2.0] and sigma.dtype == np.float64
    save_stats(str(p), [1.0], [[1.0]])
    with np.load(p) as f:
        assert sorted(f.files) == ["mu", "sigma"]
    # stored as float32, read as float64
    np.savez(p, mu=np.float32([0.1]), sigma=np.float32([[0.2]]))
    mu, sigma = load_stats(str(p))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.savez(p, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))  # a pickle inside
    with pytest.raises(ValueError):
        load_stats(str(p))
    np.savez(p, mu=np.zeros(2), sigma=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"mu \(2,\) and sigma \(2, 3\) do not fit \(D,\), \(D,D\)$"):
        load_stats(str(p))
    np.savez(p, mu=np.zeros((2, 1)), sigma=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        load_stats(str(p))
    np.savez(p, mu=np.zeros(2))
    with pytest.raises(ValueError, match="is not a statistics file: it lacks sigma$"):
        load_stats(str(p))
    p.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot be read \(EOFError: the file is empty, truncated or "
                                         r"not an \.npz\): remove it and run again to compute it anew$"):
        load_stats(str(p))
    p.write_bytes(b"definitely not numpy")
    with pytest.raises(ValueError, match=r"is not an \.npz file: remove it and run again to compute it anew$"):
        load_stats(str(p))


# ------------------------------------------------------------------------------------------------
# The per-sample generators EDM's generate.py uses
# ------------------------------------------------------------------------------------------------

def test_stacked_generators_check_the_batch_and_pass_the_dtype():
    from minisims.streams import StackedRandomGenerator
    g = StackedRandomGenerator([5, 6])
    z = g.standard_normal((2, 3), dtype=np.float32)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z[1], np.random.default_rng(6).standard_normal(3, dtype=np.float32))
    assert StackedRandomGenerator([4]).random(1).shape == (1,)  # an int size is the batch alone
    for size in ((3, 2), 3, ()):
        with pytest.raises(ValueError, match="^a stacked draw needs the batch size 2 first, got shape"):
            g.standard_normal(size)


# ------------------------------------------------------------------------------------------------
# Resuming: what a checkpoint holds, and each refusal
# ------------------------------------------------------------------------------------------------

def _mlp_run(path, *, hidden=4, epochs=2, ema=None, resume=False):
    from minisims.data.toy import sample_gaussian
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    from minisims.sims import SIMSConfig
    from minisims.train import TrainConfig, train
    net = MLPDenoiser(MLPConfig(hidden=hidden, depth=1), np.random.default_rng(0), ensemble=1)
    data = sample_gaussian(8, np.random.default_rng(1), runs=1)
    cfg = TrainConfig(epochs=epochs, batch_size=4, ema_half_life_images=ema)
    return train(net, SIMSConfig().make_formulation(), data, cfg, 7, checkpoint=str(path), resume=resume)


def _rewrite_meta(path, drop):
    from minisims.checkpoint import read_checkpoint, save_checkpoint
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), np.random.default_rng(0), ensemble=1)
    weights, meta = read_checkpoint(str(path))
    net.load_state_dict(weights)
    extra = {g: read_checkpoint(str(path), g)[0] for g in ("adam_m", "adam_v", "run")}
    save_checkpoint(str(path), net, {k: v for k, v in meta.items() if k != drop}, extra=extra)


def test_a_run_checkpoint_records_its_training_settings(tmp_path):
    from minisims.checkpoint import read_checkpoint
    _mlp_run(tmp_path / "r.npz")
    _, meta = read_checkpoint(str(tmp_path / "r.npz"))
    assert meta["train"]["batch_size"] == 4 and meta["train"]["epochs"] == 2
    assert meta["adam_t"] == meta["steps"] == 4 and meta["state"]["epoch"] == 2


def test_resuming_refuses_another_network_schedule_or_a_checkpoint_without_run_state(tmp_path):
    p = tmp_path / "r.npz"
    _mlp_run(p)
    _mlp_run(p, resume=True)  # the same run: nothing left to do, and no refusal
    with pytest.raises(ValueError, match=r"its optimizer state does not fit this model \(another "
                                         r"network, or another trainable part\)$"):
        _mlp_run(p, hidden=5, resume=True)  # the same parameter names, other shapes
    with pytest.raises(ValueError, match=r"is from a run with another schedule \(2 epochs, not 3\)$"):
        _mlp_run(p, epochs=3, resume=True)
    for drop in ("state", "adam_t"):
        _mlp_run(p)
        _rewrite_meta(p, drop)
        with pytest.raises(ValueError, match=r"is not a training checkpoint \(no run state\): cannot "
                                             r"resume from it$"):
            _mlp_run(p, resume=True)


def test_the_toy_makes_one_network_per_run():
    from minisims.sims import SIMSConfig
    net = SIMSConfig().make_net(3, np.random.default_rng(0))
    assert net.sample_shape(5) == (3, 5, 2)


def test_vp_coefficients_for_a_scalar_sigma():
    from minisims.diffusion import VPPrecond
    vp = VPPrecond()
    c_skip, c_out, c_in, c_noise = vp.coefficients(0.5)
    assert c_skip == 1.0 and c_out == -0.5 and c_in == pytest.approx(1 / math.sqrt(1.25), rel=1e-15)
    t = (math.sqrt(vp.beta_min ** 2 + 2 * vp.beta_d * math.log1p(0.25)) - vp.beta_min) / vp.beta_d
    assert c_noise == pytest.approx(999 * t, rel=1e-14)


# ------------------------------------------------------------------------------------------------
# Algorithm 1's random streams: fit_sims is train_base, synthesize, train_aux with these streams
# ------------------------------------------------------------------------------------------------

def _small_toy():
    from minisims.data.toy import sample_gaussian
    from minisims.nn.mlp import MLPConfig
    from minisims.sims import SIMSConfig
    cfg = SIMSConfig(mlp=MLPConfig(hidden=8, depth=1), base_epochs=2, aux_epochs=2, n_synth=16,
                     batch_size=8, ddpm_T=6)
    return cfg, sample_gaussian(16, np.random.default_rng(0), runs=2)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def _tiny_images():
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.nn.unet import UNet, UNetConfig
    from minisims.sims import SIMSRecipe
    from minisims.train import TrainConfig
    unet = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                      attn_resolutions=(), dropout=0.0, num_freqs=4)
    form = EDM(precond=EDMPrecond(0.5), num_steps=3, member_ndim=0, data_ndim=3)
    r = SIMSRecipe(make_model=lambda data, rng: UNet(unet, rng), formulation=form,
                   base=TrainConfig(batch_size=4, images=8), aux=TrainConfig(batch_size=4, images=8),
                   n_synth=6, sample_batch=4)
    return r, np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)


def test_fit_sims_streams_from_an_integer_seed(capsys):
    """The image path: S from the seeds SYNTH_SEEDS_FROM on, the aux from derive_seed(seed, 1)."""
    from minisims.sims import SYNTH_SEEDS_FROM, fit_sims, synthesize, train_aux, train_base
    from minisims.streams import derive_seed
    r, data = _tiny_images()
    fit = fit_sims(data, r, 5)
    base, _ = train_base(data, r, 5)
    S = synthesize(base, r, 6, range(SYNTH_SEEDS_FROM, SYNTH_SEEDS_FROM + 6))
    aux, _ = train_aux(base, S, r, derive_seed(5, 1))
    assert _same_weights(fit.base, base) and _same_weights(fit.aux, aux)
    assert capsys.readouterr().err == ""  # no progress unless asked
    # given streams are used as given; n_synth overrides the recipe's
    fit = fit_sims(data, r, 5, synth_rng=range(7, 7 + 4), aux_rng=9, n_synth=4)
    aux, _ = train_aux(base, synthesize(base, r, 4, range(7, 11)), r, 9)
    assert _same_weights(fit.aux, aux)


def test_fit_sims_streams_from_a_generator():
    from minisims.sims import fit_sims, synthesize, train_aux, train_base
    cfg, data = _small_toy()
    r = cfg.recipe()
    fit = fit_sims(data, cfg, np.random.default_rng(3))
    g = np.random.default_rng(3)  # one generator, consumed in Algorithm 1's order
    base, _ = train_base(data, r, g)
    aux, _ = train_aux(base, synthesize(base, r, 16, g), r, g)
    assert _same_weights(fit.aux, aux)
    s, a = np.random.default_rng(11), np.random.default_rng(12)
    fit = fit_sims(data, cfg, np.random.default_rng(3), synth_rng=s, aux_rng=a)
    s, a = np.random.default_rng(11), np.random.default_rng(12)
    aux, _ = train_aux(base, synthesize(base, r, 16, s), r, a)
    assert _same_weights(fit.aux, aux)


# ------------------------------------------------------------------------------------------------
# DDPM's score and its units
# ------------------------------------------------------------------------------------------------

def test_ddpm_scaling_and_score():
    """s_t = sqrt(ab_t), sigma_t = sqrt((1 - ab_t) / ab_t); the score is -eps / sqrt(1 - ab_t),
    of eq. 5's eps with an aux at w != 0 and of the base's alone otherwise."""
    f = DDPM(T=6)
    net, aux = _Stub(), _Stub(0.5)
    x = np.random.default_rng(0).standard_normal((1, 4, 2))
    for t in range(1, 6):
        ab = f.alpha_bar[t]
        s, sigma = f.scaling(t)
        assert s == math.sqrt(ab) and sigma == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-15)
        eps_b = f.model(net)(x, t)
        np.testing.assert_array_equal(f.score(net, x, t), -eps_b / math.sqrt(1 - ab))
        np.testing.assert_array_equal(f.score(net, x, t, aux=aux), f.score(net, x, t))  # w = 0
        np.testing.assert_array_equal(f.score(net, x, t, w=2.0), f.score(net, x, t))  # no aux
    half = _Stub(0.5)
    eps_b, eps_a = f.model(net)(x, 3), f.model(half)(x, 3)
    np.testing.assert_allclose(f.score(net, x, 3, aux=half, w=1.0),
                               -(2 * eps_b - eps_a) / math.sqrt(1 - f.alpha_bar[3]), rtol=1e-14)
    for t in (0, 6):
        with pytest.raises(ValueError, match=r"the score needs a step 0 < t < 6"):
            f.score(net, x, t)


# ------------------------------------------------------------------------------------------------
# The convolution's NumPy reference (the fast paths off): dtypes, strides and padding
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_the_conv_reference_keeps_float32_and_its_gradients_are_adjoints(stride, padding, monkeypatch):
    from minisims import ops
    monkeypatch.setattr(ops, "FAST", False)
    rng = np.random.default_rng(stride + 2 * padding)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    kw = {} if (stride, padding) == (1, 0) else {"stride": stride, "padding": padding}
    y = ops.conv2d(x, W, np.zeros(4, np.float32), **kw)
    assert y.dtype == np.float32
    assert y.shape == (2, 4, (7 + 2 * padding - 3) // stride + 1, (6 + 2 * padding - 3) // stride + 1)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.conv2d_backward_input(dy, W, x.shape, **kw)
    dW, db = ops.conv2d_backward_weight(dy, x, W.shape, **kw)
    assert db.dtype == np.float32 and dx.dtype == np.float32 and dW.dtype == np.float32 and dx.shape == x.shape
    x64, W64, dy64 = (a.astype(np.float64) for a in (x, W, dy))
    inner = (ops.conv2d(x64, W64, np.zeros(4), **kw) * dy64).sum()  # <conv(x, W), dy>
    np.testing.assert_allclose((x64 * dx).sum(), inner, rtol=1e-5)  # = <x, dx>
    np.testing.assert_allclose((W64 * dW).sum(), inner, rtol=1e-5)  # = <W, dW>


def test_run_sims_is_fit_sims_then_sample_sims_on_one_generator():
    from minisims.sims import fit_sims, run_sims, sample_sims
    cfg, data = _small_toy()
    fit, x = run_sims(data, cfg, 1.5, 10, np.random.default_rng(4))
    g = np.random.default_rng(4)
    want_fit = fit_sims(data, cfg, g)
    want = sample_sims(want_fit.base, want_fit.aux, cfg, 1.5, 10, g)
    assert _same_weights(fit.aux, want_fit.aux)
    np.testing.assert_array_equal(x, want)


def test_derive_seed_is_one_word_of_the_keyed_seed_sequence():
    from minisims.streams import derive_seed
    for seed, key in ((5, (1,)), (0, (2, 3)), (2 ** 40, (7,))):
        want = int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])
        assert derive_seed(seed, *key) == want and 0 <= want < 2 ** 32
    assert len({derive_seed(5, k) for k in range(20)}) == 20


def test_stacked_uniforms_are_each_seeds_own():
    from minisims.streams import StackedRandomGenerator
    u = StackedRandomGenerator([3, 4]).random((2, 5), dtype=np.float32)
    assert u.dtype == np.float32
    for row, s in zip(u, (3, 4)):
        np.testing.assert_array_equal(row, np.random.default_rng(s).random(5, dtype=np.float32))


def test_the_unpickler_refuses_persistent_ids():
    import io
    import pickle
    from minisims.data.safe_pickle import RestrictedUnpickler

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None
    buf = io.BytesIO()
    P(buf).dump(["secret"])
    with pytest.raises(pickle.UnpicklingError, match="^refused a persistent id: not a plain data pickle$"):
        RestrictedUnpickler(io.BytesIO(buf.getvalue())).load()


# ------------------------------------------------------------------------------------------------
# The training loop: its loss history, keyed streams, progress, dropout, checkpoints and refusals
# ------------------------------------------------------------------------------------------------

class _Recording:
    """A formulation that trains as the given one does and records each step's batch and loss."""

    def __init__(self, inner):
        self.inner, self.steps = inner, []
        self.member_ndim, self.data_ndim, self.name = inner.member_ndim, inner.data_ndim, inner.name

    def loss_and_grad(self, net, y, rng):
        loss = self.inner.loss_and_grad(net, y, rng)
        self.steps.append((y.shape[-2] if self.member_ndim else y.shape[0], np.array(loss)))
        return loss


def _toy_train(cfg, rng=7, n=10, runs=2, net=None, **kw):
    from minisims.data.toy import sample_gaussian
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    from minisims.sims import SIMSConfig
    from minisims.train import train
    net = net or MLPDenoiser(MLPConfig(hidden=4, depth=1), np.random.default_rng(0), ensemble=runs)
    form = _Recording(SIMSConfig().make_formulation())
    data = sample_gaussian(n, np.random.default_rng(1), runs=runs)
    return train(net, form, data, cfg, rng, **kw), form


def test_the_loss_history_is_each_epochs_mean_over_its_samples():
    """Batches of 4, 4 and 2: an epoch's loss is sum(size_b loss_b) / n per member."""
    from minisims.train import TrainConfig
    res, form = _toy_train(TrainConfig(epochs=3, batch_size=4))
    assert [s for s, _ in form.steps] == [4, 4, 2] * 3
    for e in range(3):
        steps = form.steps[3 * e:3 * e + 3]
        np.testing.assert_allclose(res.history[e], sum(s * l for s, l in steps) / 10, rtol=1e-6)
    assert res.history.shape == (3, 2) and res.steps == 9 and res.images == 30


def test_a_seeded_run_keys_init_every_shuffle_and_every_step(monkeypatch):
    from minisims import train as train_mod
    from minisims.train import TRAIN_STREAMS, TrainConfig, init_generator
    keys = []
    real = TRAIN_STREAMS.rng
    monkeypatch.setattr(TRAIN_STREAMS, "rng", lambda *k, **kw: keys.append(k) or real(*k, **kw))
    _toy_train(TrainConfig(epochs=2, batch_size=4), rng=5)
    assert keys == [(5, 0, "shuffle"), (5, 0, "step"), (5, 1, "step"), (5, 2, "step"),
                    (5, 1, "shuffle"), (5, 3, "step"), (5, 4, "step"), (5, 5, "step")]
    keys.clear()
    g = init_generator(np.int64(5))
    assert keys == [(5, 0, "init")] and train_mod.init_generator(g) is g


def test_training_reports_progress_only_when_asked(capsys, monkeypatch):
    from minisims import train as train_mod
    from minisims.train import TrainConfig

    class Clock:  # a second per reading, from 100 s: the speed shown is exact
        now = 99.0

        def perf_counter(self):
            Clock.now += 1.0
            return Clock.now
    _toy_train(TrainConfig(epochs=2, batch_size=4))
    assert capsys.readouterr().err == ""
    res, _ = _toy_train(TrainConfig(epochs=2, batch_size=4), progress=True)
    err = capsys.readouterr().err
    mean = float(np.mean(res.history[-1]))
    assert "train: 100% (6/6 step)" in err and f"loss={mean:.4g}" in err
    _toy_train(TrainConfig(epochs=2, batch_size=4), progress="aux")
    assert "aux: 100% (6/6 step)" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "time", Clock())
    _toy_train(TrainConfig(epochs=2, batch_size=4), progress=True)
    # 10 samples an epoch, one clock second between the start and each epoch's end
    assert capsys.readouterr().err.rstrip().endswith("img_s=10")


def test_dropout_draws_from_each_steps_generator_and_is_off_after_training(monkeypatch):
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.nn.unet import UNet, UNetConfig
    from minisims.train import TRAIN_STREAMS, TrainConfig, train
    data = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    form = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    for p in (0.0, 0.2):
        cfg = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                         attn_resolutions=(), dropout=p, num_freqs=4)
        net = UNet(cfg, np.random.default_rng(1))
        calls = []
        real = net.set_dropout
        monkeypatch.setattr(net, "set_dropout", lambda g: calls.append(
            None if g is None else g.bit_generator.state["state"]) or real(g))
        train(net, form, data, TrainConfig(batch_size=4, epochs=1), 3)
        if p == 0:
            assert calls == []
        else:  # a step's masks come from that step's stream; None switches dropout off
            assert len(calls) == 3 and calls[-1] is None
            for s, state in enumerate(calls[:2]):
                assert state == TRAIN_STREAMS.rng(3, s, "step").bit_generator.state["state"]


def test_training_refuses_empty_data_and_hflip_outside_images():
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    from minisims.sims import SIMSConfig
    from minisims.train import TrainConfig, train
    res, _ = _toy_train(TrainConfig(epochs=1, batch_size=4), n=1)  # one point is data enough
    assert res.steps == 1
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), np.random.default_rng(0), ensemble=2)
    with pytest.raises(ValueError, match="^cannot train on an empty data set$"):
        train(net, SIMSConfig().make_formulation(), np.zeros((2, 0, 2)), TrainConfig(epochs=1), 0)
    msg = r"^hflip mirrors images: it needs one model's data \(N,C,H,W\)$"
    with pytest.raises(ValueError, match=msg):  # an ensemble's points
        train(net, SIMSConfig().make_formulation(), np.zeros((2, 4, 2)), TrainConfig(epochs=1, hflip=True), 0)
    single = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=1)
    with pytest.raises(ValueError, match=msg):  # one model, but points
        train(MLPDenoiser(MLPConfig(hidden=4, depth=1), np.random.default_rng(0)), single,
              np.zeros((4, 2), np.float32), TrainConfig(epochs=1, hflip=True), 0)


def test_checkpoints_land_when_the_images_seen_reach_each_multiple(tmp_path, monkeypatch):
    from minisims import train as train_mod
    from minisims.train import TrainConfig
    saves = []
    real = train_mod._save
    monkeypatch.setattr(train_mod, "_save", lambda *a: saves.append((a[5].seen, a[8])) or real(*a))
    _toy_train(TrainConfig(epochs=2, batch_size=4, checkpoint_every_images=8),
               checkpoint=str(tmp_path / "c.npz"), meta={"who": "test"})
    # images seen after each step: 4, 8, 10 | 14, 18, 20. A save when they reach 8 (the next at
    # 16), when they reach 16 (at 18; the next at 24), and the final one
    assert [s for s, _ in saves] == [8, 18, 20]
    assert all(m["who"] == "test" for _, m in saves)
    assert saves[-1][1].get("finished") is True


def test_a_non_finite_loss_names_the_formulation_and_the_step():
    from minisims.train import TrainingDiverged, _check_finite
    f = DDPM()
    _check_finite(np.array(-1), f)  # finite all along
    with pytest.raises(TrainingDiverged, match=r"^the ddpm loss became NaN or inf at step 1: training "
                                               r"stopped; the last checkpoint \(if any\) is from before it$"):
        _check_finite(np.array(0), f)
    _check_finite(np.array([3, -1]), f, members=True)  # an ensemble reports its members instead


# ------------------------------------------------------------------------------------------------
# Algorithm 1's steps pass their settings on
# ------------------------------------------------------------------------------------------------

def test_the_toy_settings_become_the_recipe_and_the_formulation():
    from minisims.diffusion import EDMPrecond, VPPrecond
    from minisims.guidance import GuidanceInterval
    from minisims.sims import SIMSConfig
    cfg = SIMSConfig(lr=3e-4, batch_size=64, base_epochs=5, aux_epochs=2, aux_images=300,
                     n_synth=77, interval=GuidanceInterval(sigma_lo=0.1, sigma_hi=2.0), num_steps=9, sigma_data=0.7)
    r = cfg.recipe()
    assert (r.base.lr, r.base.batch_size, r.base.epochs) == (3e-4, 64, 5)
    assert (r.aux.lr, r.aux.batch_size, r.aux.epochs, r.aux.images) == (3e-4, 64, 2, 300)
    assert r.n_synth == 77 and r.interval == GuidanceInterval(sigma_lo=0.1, sigma_hi=2.0)
    edm = SIMSConfig(formulation="edm", num_steps=9, sigma_data=0.7).make_formulation()
    assert isinstance(edm.precond, EDMPrecond) and edm.precond.sigma_data == 0.7 and edm.num_steps == 9
    vp = SIMSConfig(formulation="vp", num_steps=9).make_formulation()
    assert isinstance(vp.precond, VPPrecond) and vp.num_steps == 9
    assert SIMSConfig(ddpm_T=12).make_formulation().T == 12
    with pytest.raises(ValueError, match=r"^unknown formulation 'x': use ddpm, edm or vp$"):
        SIMSConfig(formulation="x").make_formulation()


def test_algorithm_1s_steps_report_progress_under_their_names(capsys):
    from minisims.sims import fit_sims, run_sims, sample_sims
    cfg, data = _small_toy()
    fit = fit_sims(data, cfg, np.random.default_rng(0), progress=True)
    err = capsys.readouterr().err
    assert "base: 100% (4/4 step)" in err and "aux: 100% (4/4 step)" in err and "ddpm: 100%" in err
    sample_sims(fit.base, fit.aux, cfg, 1.0, 4, np.random.default_rng(0))
    run_sims(data, cfg, 1.0, 4, np.random.default_rng(0))
    assert capsys.readouterr().err == ""
    sample_sims(fit.base, fit.aux, cfg, 1.0, 4, np.random.default_rng(0), progress=True)
    assert "ddpm: 100%" in capsys.readouterr().err
    run_sims(data, cfg, 1.0, 4, np.random.default_rng(0), progress=True)
    err = capsys.readouterr().err
    assert "base: 100%" in err and "aux: 100%" in err and err.count("ddpm: 100%") == 2


def test_fit_sims_trains_the_aux_on_what_select_picks():
    from minisims.sims import fit_sims, synthesize, train_aux, train_base
    cfg, data = _small_toy()
    r = cfg.recipe()
    seen = []

    def select(S, g):  # keep the first half of each run's synthetic points
        seen.append((S.shape, g))
        return S[:, :8]
    g = np.random.default_rng(3)
    fit = fit_sims(data, cfg, g, select=select)
    assert seen[0][0] == (2, 16, 2) and seen[0][1] is g
    h = np.random.default_rng(3)
    base, _ = train_base(data, r, h)
    aux, _ = train_aux(base, synthesize(base, r, 16, h)[:, :8], r, h)
    assert _same_weights(fit.aux, aux)


def test_the_steps_return_the_ema_and_pass_checkpoint_resume_and_meta_on(tmp_path):
    from dataclasses import replace
    from minisims.checkpoint import read_checkpoint
    from minisims.sims import train_aux, train_base
    from minisims.train import init_generator, train
    r, data = _tiny_images()
    r = replace(r, base=replace(r.base, ema_half_life_images=4.0),
                aux=replace(r.aux, ema_half_life_images=4.0))
    base, _ = train_base(data, r, 5, checkpoint=str(tmp_path / "b.npz"), meta={"step": "base"})
    net = r.make_model(data, init_generator(5))
    res = train(net, r.formulation, data, r.base, 5)
    assert _same_weights(base, res.ema) and not _same_weights(base, net)  # the EMA, not the weights
    _, meta = read_checkpoint(str(tmp_path / "b.npz"))
    assert meta["step"] == "base" and meta["finished"] is True
    again, _ = train_base(data, r, 5, checkpoint=str(tmp_path / "b.npz"), resume=True)
    assert _same_weights(again, base)  # resumed from the finished run: nothing left to train
    aux, _ = train_aux(base, data[:4], r, 6, checkpoint=str(tmp_path / "a.npz"), meta={"step": "aux"})
    res = train(base.copy(), r.formulation, data[:4], r.aux, 6)
    assert _same_weights(aux, res.ema)
    assert read_checkpoint(str(tmp_path / "a.npz"))[1]["step"] == "aux"
    again, _ = train_aux(base, data[:4], r, 6, checkpoint=str(tmp_path / "a.npz"), resume=True)
    assert _same_weights(again, aux)


def test_synthesize_batches_passes_the_interval_and_shares_the_encoder(monkeypatch, capsys):
    from dataclasses import replace
    from minisims import shared_encoder
    from minisims.guidance import GuidanceInterval
    from minisims.sims import SYNTH_SEEDS_FROM, synthesize, train_base
    r, data = _tiny_images()
    base, _ = train_base(data, r, 5)
    aux = base.copy()
    for _, mod, k in aux.decoder.named_parameters():
        mod.params[k] = mod.params[k] + 0.05
    seeds = range(SYNTH_SEEDS_FROM, SYNTH_SEEDS_FROM + 6)
    whole = synthesize(base, replace(r, sample_batch=None), 6, seeds, aux=aux, w=1.0)
    assert whole.shape == (6, 3, 8, 8) and whole.dtype == np.float32
    np.testing.assert_array_equal(synthesize(base, r, 6, seeds, aux=aux, w=1.0), whole)  # 4 + 2
    narrow = replace(r, interval=GuidanceInterval(first_step=1, last_step=1))
    assert not np.array_equal(synthesize(base, narrow, 6, seeds, aux=aux, w=1.0), whole)
    pairs = []
    real = shared_encoder.SharedEncoderPair
    monkeypatch.setattr(shared_encoder, "SharedEncoderPair",
                        lambda *a: pairs.append(a) or real(*a))
    aux.train_encoder = False
    dec = replace(r, aux=replace(r.aux, trainable="decoder"), interval=GuidanceInterval(first_step=1, last_step=1))
    shared = synthesize(base, dec, 6, seeds, aux=aux, w=1.0, progress=True)
    assert len(pairs) == 1  # one pair for all the batches
    assert capsys.readouterr().err.count("heun: 100% (3/3 it)") == 2  # a bar per batch
    np.testing.assert_allclose(shared, synthesize(base, narrow, 6, seeds, aux=aux, w=1.0), atol=1e-5)
    synthesize(base, dec, 6, seeds, aux=aux, w=0.0)
    synthesize(base, r, 6, seeds, aux=aux, w=1.0)
    assert len(pairs) == 1  # unguided, or an aux trained whole: no pair


# ------------------------------------------------------------------------------------------------
# Adam and its EMA, the layers' initialisation and gradient accumulation, the embedding
# ------------------------------------------------------------------------------------------------

def test_adam_is_kingma_and_ba_and_the_ema_follows_the_new_weights(monkeypatch):
    """The reference step (float64: no fused kernel), against Algorithm 1 of Kingma & Ba."""
    from minisims import ops
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    m, v, e = rng.standard_normal(5) * 0.1, rng.random(5) * 0.1, rng.standard_normal(5)
    want_m, want_v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
    want_p = p - 0.01 * (want_m / (1 - 0.9 ** 3)) / (np.sqrt(want_v / (1 - 0.999 ** 3)) + 1e-8)
    want_e = 0.8 * e + 0.2 * want_p
    ops.adam_ema([(p, g, m, v, e)], 0.01, (0.9, 0.999), 1e-8, 3, 0.8)
    np.testing.assert_allclose(m, want_m, rtol=1e-14)
    np.testing.assert_allclose(v, want_v, rtol=1e-14)
    np.testing.assert_allclose(p, want_p, rtol=1e-14)
    np.testing.assert_allclose(e, want_e, rtol=1e-14)


def test_the_seam_fuses_adam_for_enough_float32_weights_only(monkeypatch):
    from minisims import ops
    from minisims.kernels import adam_ema as kernel
    cpu = ops.FUSE_ADAM_FROM["cpu"]
    big, small = np.zeros(cpu, np.float32), np.zeros(cpu - 1, np.float32)
    entry = lambda p: (p, p, p, p, None)  # noqa: E731
    assert ops.fuse_adam([entry(big)]) and ops.fuse_adam([entry(small), entry(np.zeros(1, np.float32))])
    assert not ops.fuse_adam([entry(small)]) and not ops.fuse_adam([])
    assert not ops.fuse_adam([entry(np.zeros(cpu, np.float64))])
    assert not ops.fuse_adam([entry(big), entry(np.zeros(1))])  # one float64 among them
    calls = []
    monkeypatch.setattr(kernel, "adam_ema_update", lambda *a: calls.append(a))
    ops.adam_ema([entry(big)], 0.1, (0.8, 0.9), 1e-6, 4, 0.5)
    assert len(calls) == 1 and calls[0][1:] == (0.1, (0.8, 0.9), 1e-6, 4, 0.5)
    assert calls[0][0][0][0] is big
    ops.adam_ema([entry(np.ones(3, np.float32))], 0.1, (0.8, 0.9), 1e-6, 4, None)  # the reference
    monkeypatch.setattr(ops, "FAST", False)
    ops.adam_ema([entry(big)], 0.1, (0.8, 0.9), 1e-6, 4, None)
    assert len(calls) == 1


def test_adam_trains_the_same_with_an_ema_and_skips_frozen_weights():
    from minisims.nn.unet import UNet, UNetConfig
    from minisims.train import Adam, EMA
    cfg = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                     attn_resolutions=(), dropout=0.0, num_freqs=4)
    nets = [UNet(cfg, np.random.default_rng(1)) for _ in range(3)]
    for net in nets:
        for _, mod, k in net.named_parameters():
            mod.grads[k] = np.full_like(mod.params[k], 0.01)
    Adam(nets[0]).step()
    Adam(nets[1]).step(EMA(nets[1], beta=0.5))
    assert _same_weights(nets[0], nets[1])
    assert Adam(nets[0]).lr == 1e-3
    enc = {n: a.copy() for n, a in nets[2].encoder.state_dict().items()}
    ema = EMA(nets[2], beta=0.5)
    Adam(nets[2].decoder).step(ema)  # a decoder-only fine-tune: the encoder gets the EMA alone
    assert all(np.array_equal(a, nets[2].encoder.state_dict()[n]) for n, a in enc.items())
    with pytest.raises(ValueError, match="^learning rate must be positive, got 0$"):
        Adam(nets[0], lr=0)


def test_linear_biases_are_uniform_in_plus_minus_one_over_sqrt_fan_in_and_gradients_add_up():
    from minisims.nn.layers import Linear
    for ensemble in (None, 3):
        lin = Linear(16, 400, np.random.default_rng(0), ensemble, np.float64)
        b, k = lin.params["b"], 1 / math.sqrt(16)
        assert b.min() >= -k and b.max() <= k and b.min() < -0.9 * k and b.max() > 0.9 * k
        x = np.random.default_rng(1).standard_normal(((3,) if ensemble else ()) + (5, 16))
        lin.zero_grad()
        lin.forward(x)
        lin.backward(np.ones(x.shape[:-1] + (400,)))
        once = {n: g.copy() for n, g in lin.grads.items()}
        lin.forward(x)
        lin.backward(np.ones(x.shape[:-1] + (400,)))
        for n, g in lin.grads.items():  # backward adds to the gradients, as zero_grad expects
            np.testing.assert_allclose(g, 2 * once[n], rtol=1e-14)


def test_the_noise_embedding_defaults_and_its_frequencies():
    from minisims.nn.layers import NoiseEmbedding
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    assert NoiseEmbedding().kind == "raw" and NoiseEmbedding().dim == 1
    f = NoiseEmbedding("fourier")
    np.testing.assert_allclose(f.freqs, np.geomspace(1.0, 16.0, 8), rtol=1e-7)
    assert f.dim == 16 and f.freqs.dtype == np.float32
    c = np.array([0.3, 1.1])
    e = NoiseEmbedding("fourier", 3, 4.0, dtype=np.float64)
    np.testing.assert_allclose(e.forward(c), np.concatenate([np.cos(np.outer(c, [1, 2, 4])),
                                                           np.sin(np.outer(c, [1, 2, 4]))], 1), rtol=1e-14)
    (dc,) = e.backward(np.ones((2, 6)))  # d/dc of sum(cos + sin) = sum f (cos - sin)
    np.testing.assert_allclose(dc, (np.array([1, 2, 4]) * (np.cos(np.outer(c, [1, 2, 4]))
                                                           - np.sin(np.outer(c, [1, 2, 4])))).sum(1), rtol=1e-13)
    net = MLPDenoiser(MLPConfig(embedding="fourier"), np.random.default_rng(0), dtype=np.float64)
    assert net.embed.freqs.dtype == np.float64
    with pytest.raises(ValueError, match=r"^unknown embedding 'x': use 'raw' or 'fourier'$"):
        NoiseEmbedding("x")


# ------------------------------------------------------------------------------------------------
# Streams, guidance and progress: the remaining details
# ------------------------------------------------------------------------------------------------

def test_named_streams_are_seed_sequences_keyed_by_coordinates_and_name():
    from minisims.streams import Streams
    s = Streams(("data", "base"))
    a = s.rng(4, 2, "base", numpy=True).random(3)
    np.testing.assert_array_equal(
        a, np.random.default_rng(np.random.SeedSequence(4, spawn_key=(2, 1))).random(3))
    np.testing.assert_array_equal(
        s.rng(4, 2, "base").random(3),
        np.random.default_rng(int(np.random.SeedSequence(4, spawn_key=(2, 1)).generate_state(1)[0])).random(3))
    g = s.rng(4, 2, "base", runs=range(3), numpy=True)
    assert g.numpy is True and s.rng(4, 2, "base", runs=range(3)).numpy is False
    with pytest.raises(ValueError, match=r"^unknown random stream 'aux': one of data, base$"):
        s.rng(4, 2, "aux")


def test_per_run_draws_of_any_shape_and_a_span_of_one():
    g = RunGenerator(KEY, RUNS, numpy=True)
    assert g.random((3, 2, 3)).shape == (3, 2, 3)
    assert g.random((3, 2, 3), dtype=np.float32).shape == (3, 2, 3)
    assert g.standard_normal((3, 2, 3)).shape == (3, 2, 3)
    ones = g.integers(5, 6, size=(3, 2, 2))
    assert ones.shape == (3, 2, 2) and (ones == 5).all()
    with pytest.raises(RuntimeError, match=r"^a per-run stream ran out of draw counters \(2\^32 calls\)$"):
        g.calls = 2 ** 32
        g.words(1)


def test_guidance_holds_a_python_float_and_needs_an_aux():
    from minisims.diffusion import _guidance
    from minisims.guidance import Guidance, sims_combine
    assert type(Guidance(_stub_eps, np.float32(0.5)).w) is float
    with pytest.raises(ValueError, match="^guidance weight w != 0 needs an auxiliary model$"):
        _guidance(None, 1.0, None)
    base, aux = np.ones(3), np.full(3, 2.0, np.float32)
    for w, want in ((0.0, base), (-1.0, aux)):  # the endpoints select, in the wider dtype
        out = sims_combine(base, aux, w)
        assert out.dtype == np.float64 and np.array_equal(out, want)


def test_sampler_progress_bars_leave_no_trace(monkeypatch):
    from minisims import progress
    from minisims.diffusion import _progress
    seen = []
    monkeypatch.setattr(progress, "bar", lambda it, **kw: seen.append(kw) or it)
    assert list(_progress(iter([1, 2]), 2, "heun", True)) == [1, 2]
    assert seen == [dict(total=2, desc="heun", leave=False)]


def test_statistics_from_an_npy_file_are_refused_in_one_line(tmp_path):
    from minisims.metrics import load_stats
    p = tmp_path / "s.npy"
    np.save(p, np.zeros(3))
    with pytest.raises(ValueError, match=r"s\.npy cannot be read \(TypeError: the file is empty, truncated"):
        load_stats(str(p))


def test_training_settings_are_checked_at_their_bounds(monkeypatch):
    from minisims import train as train_mod
    from minisims.train import TrainConfig
    TrainConfig(images=0), TrainConfig(epochs=0), TrainConfig(epochs=1, ema_half_life_images=0.5)
    for kw, msg in ((dict(), "^give a training budget: epochs or images$"),
                    (dict(images=-1), r"^the budget must be >= 0, got epochs=None, images=-1$"),
                    (dict(epochs=1, trainable="x"), r"^trainable must be one of all, decoder, got 'x'$"),
                    (dict(epochs=1, ema_half_life_images=0.0), "^ema_half_life_images must be positive, got 0.0$"),
                    (dict(epochs=1, lr=0.0), r"^need lr > 0 and batch_size >= 1, got 0.0, 2048$")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**kw)
    monkeypatch.setattr(train_mod, "MAX_STEPS", 7)
    TrainConfig(batch_size=4, images=25)  # ceil(25 / 4) = 7 steps
    with pytest.raises(ValueError, match="^a budget of 29 images at batch 4 is more than 7 steps$"):
        TrainConfig(batch_size=4, images=29)
    monkeypatch.setattr(train_mod, "MAX_STEPS", 8)
    with pytest.raises(ValueError, match="^a budget of 33 images at batch 4 is more than 8 steps$"):
        TrainConfig(batch_size=4, images=33)
    # over n samples: ceil(n / B) steps an epoch, and ceil(images / n) epochs for an images budget
    for cfg, n, steps in ((TrainConfig(batch_size=4, epochs=3), 10, 9),
                          (TrainConfig(batch_size=4, images=25), 10, 9),
                          (TrainConfig(batch_size=4, images=3), 1, 3)):
        monkeypatch.setattr(train_mod, "MAX_STEPS", steps)
        cfg.check_steps(n)  # the limit itself is allowed
        monkeypatch.setattr(train_mod, "MAX_STEPS", steps - 1)
        with pytest.raises(ValueError, match=f"^this training budget is {steps} steps over {n} "
                                             f"samples, more than the {steps - 1} a run takes$"):
            cfg.check_steps(n)


def test_an_images_budget_stops_at_the_first_step_that_reaches_it():
    from minisims.train import TrainConfig
    assert TrainConfig(batch_size=4, images=5).schedule(10) == [[4, 4]]
    assert TrainConfig(batch_size=4, images=8).schedule(10) == [[4, 4]]
    assert TrainConfig(batch_size=4, images=9).schedule(10) == [[4, 4, 2]]


def test_decoder_only_training_freezes_the_encoder_of_a_network_that_has_one():
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    from minisims.train import trainable_part
    r, data = _tiny_images()
    net = r.make_model(data, np.random.default_rng(0))
    assert trainable_part(net, "decoder") is net.decoder and net.train_encoder is False

    class HalfUNet:
        decoder = object()
    for bad in (HalfUNet(), MLPDenoiser(MLPConfig(), np.random.default_rng(0))):
        with pytest.raises(ValueError, match=f"{type(bad).__name__} has none: use trainable='all'$"):
            trainable_part(bad, "decoder")


def test_a_run_reports_ensemble_divergence_and_trains_at_its_learning_rate(monkeypatch):
    from minisims import progress
    from minisims.train import TrainConfig
    res, _ = _toy_train(TrainConfig(epochs=1, batch_size=4))
    assert res.diverged.dtype.kind == "i" and res.diverged.tolist() == [0, 0]
    slow, _ = _toy_train(TrainConfig(epochs=1, batch_size=4, lr=1e-2))
    assert not np.array_equal(slow.history, res.history)  # the optimizer got the config's lr
    one, form = _toy_train(TrainConfig(epochs=1, batch_size=4), n=1)
    np.testing.assert_allclose(one.history[0], form.steps[0][1], rtol=1e-6)  # one sample, one loss
    seen = []
    monkeypatch.setattr(progress, "bar", lambda **kw: seen.append(kw) or progress.LogLines(
        **{k: v for k, v in kw.items() if k != "leave"}))
    _toy_train(TrainConfig(epochs=2, batch_size=4), progress="base")
    assert seen == [dict(total=6, initial=0, unit="step", leave=False, desc="base")]


def test_a_single_model_stops_at_the_end_of_the_epoch_its_loss_went_non_finite():
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.train import TrainConfig, TrainingDiverged, train
    r, data = _tiny_images()
    form = _Recording(EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3))
    assert train(r.make_model(data, np.random.default_rng(0)), form, data,
                 TrainConfig(batch_size=4, epochs=1), 1).diverged is None  # an ensemble's field
    form.steps.clear()
    with pytest.raises(TrainingDiverged, match="^the edm loss became NaN or inf at step 1"):
        train(r.make_model(data, np.random.default_rng(0)), form, np.full_like(data, np.nan),
              TrainConfig(batch_size=4, epochs=3), 1)
    assert len(form.steps) == 2  # the first epoch's 2 steps, not all 3 epochs' 6


def test_train_aux_and_train_base_pass_checkpoint_resume_and_meta_to_train(monkeypatch, tmp_path):
    from minisims import sims
    calls = []
    real = sims.train
    monkeypatch.setattr(sims, "train", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    r, data = _tiny_images()
    base, _ = sims.train_base(data, r, 5, checkpoint=str(tmp_path / "b.npz"), resume=True, meta={"m": 1})
    sims.train_aux(base, data[:4], r, 6, checkpoint=str(tmp_path / "a.npz"), resume=True, meta={"m": 2})
    assert [(c["checkpoint"][-5:], c["resume"], c["meta"]) for c in calls] == [
        ("b.npz", True, {"m": 1}), ("a.npz", True, {"m": 2})]
    with pytest.raises(ValueError, match=r"^resume needs a checkpoint path and an integer seed as rng \(keyed "
                                         r"streams: a generator's position cannot be restored exactly\)$"):
        sims.train_base(data, r, np.random.default_rng(0), resume=True, checkpoint="x.npz")
