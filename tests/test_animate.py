"""The toy animation (minisims/animate.py) and what it rests on.

- The samplers' ``on_step`` hook records the states without changing the samples, bit for bit,
  for every sampler variant, guided or not; the last state recorded is the sample.
- The formulations' ``score`` is the closed form grad log p for a Gaussian's ideal model (EDM:
  (D - x) / sigma^2, DDPM: -eps / sqrt(1 - ab_t)), and is the field the sampler's own update
  follows (an Euler step, DDPM's last step), guided by eq. 5 included.
- Both panels start from the same noise and draw the same numbers: at w = 0 the SIMS trajectory
  is the base's bit for bit, and the last state is what ``sims.sample_sims`` draws from the seed.
- The GIF is written, PIL reads it, and its frame count is the one returned and expected; bad
  arguments raise a one-line ValueError before any work.
"""
import math

import numpy as np
import pytest
from PIL import Image

from minisims.animate import toy_trajectories, write_toy_animation
from minisims.data.toy import GAUSSIAN_COV, sample_gaussian
from minisims.diffusion import DDPM, EDM, EDMPrecond, VPPrecond, ddpm_betas, edm_sigma_steps
from minisims.gradcheck import assert_close
from minisims.guidance import GuidanceInterval
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.sims import SIMSConfig, SIMSResult, fit_sims, sample_sims

TINY = dict(mlp=MLPConfig(hidden=16, depth=2), base_epochs=3, aux_epochs=2, n_synth=64,
            ddpm_T=6, num_steps=4)
STATES = {"ddpm": 6, "edm": 5}  # K + 1: DDPM T - 1 steps, EDM N steps, and the initial noise


@pytest.fixture(scope="module", params=["ddpm", "edm"])
def toy(request):
    """A tiny SIMS fit of 2 runs (seconds): (formulation name, cfg, fit)."""
    cfg = SIMSConfig(formulation=request.param, **TINY)
    data = sample_gaussian(64, np.random.default_rng(0), runs=2)  # 2,64,2
    return request.param, cfg, fit_sims(data, cfg, np.random.default_rng(1))


def _nets(seed=0, ensemble=2):
    g = np.random.default_rng(seed)
    cfg = MLPConfig(hidden=8, depth=1)
    return MLPDenoiser(cfg, g, ensemble=ensemble), MLPDenoiser(cfg, g, ensemble=ensemble)


FORMULATIONS = {
    "ddpm": DDPM(T=6),
    "edm-heun": EDM(precond=EDMPrecond(1.4), num_steps=4),
    "edm-euler": EDM(precond=EDMPrecond(1.4), num_steps=4, solver="euler"),
    "edm-churn": EDM(precond=EDMPrecond(1.4), num_steps=4, S_churn=5.0, S_min=0.05, S_max=50),
    "vp": EDM(precond=VPPrecond(), num_steps=4),
}


@pytest.mark.parametrize("name", list(FORMULATIONS))
@pytest.mark.parametrize("w", [0.0, 2.0])
def test_on_step_leaves_samples_bit_identical(name, w):
    f = FORMULATIONS[name]
    base, aux = _nets()
    shape = base.sample_shape(5)  # 2,5,2
    plain = f.sample(base, shape, np.random.default_rng(7), aux=aux, w=w)
    calls = []
    hooked = f.sample(base, shape, np.random.default_rng(7), aux=aux, w=w,
                      on_step=lambda i, x, level: calls.append((i, x.copy(), level)))
    assert (hooked.dtype, hooked.shape, hooked.tobytes()) == (plain.dtype, plain.shape, plain.tobytes())
    K = f.T - 1 if isinstance(f, DDPM) else f.num_steps
    assert [i for i, _, _ in calls] == list(range(K + 1))  # the initial noise, then every step
    assert calls[-1][1].tobytes() == plain.tobytes()  # the last state is the sample
    levels = [level for _, _, level in calls]
    if isinstance(f, DDPM):
        assert levels == list(range(f.T - 1, -1, -1))  # t = T-1 .. 0
    else:
        assert np.array_equal(levels, edm_sigma_steps(f.num_steps, f.sigma_min, f.sigma_max, f.rho))


class _IdealEps:
    """DDPM's ideal epsilon predictor for x_0 ~ N(0, C): E[eps | x_t] = sqrt(1 - ab) A^-1 x_t,
    A = ab C + (1 - ab) I, the covariance of x_t."""
    dtype = np.float64

    def __init__(self, alpha_bar, C):
        self.alpha_bar, self.C = alpha_bar, C

    def forward(self, x, c):
        ab = self.alpha_bar[int(round(c))]
        A = ab * self.C + (1 - ab) * np.eye(2)
        return math.sqrt(1 - ab) * x @ np.linalg.inv(A)  # N,2 (A symmetric)


class _IdealF:
    """The EDM network F whose preconditioned output c_skip x + c_out F is the ideal denoiser for
    x_0 ~ N(0, C): D(x; sigma) = C (C + sigma^2 I)^-1 x. It undoes the preconditioning: sigma from
    c_noise = log(sigma) / 4, x from the input c_in x."""
    dtype = np.float64

    def __init__(self, precond, C):
        self.precond, self.C = precond, C

    def forward(self, x_in, c_noise):
        sigma = math.exp(4 * c_noise)
        c_skip, c_out, c_in, _ = self.precond.coefficients(np.float64(sigma))
        x = x_in / c_in  # N,2
        D = x @ (self.C @ np.linalg.inv(self.C + sigma ** 2 * np.eye(2))).T  # N,2
        return (D - c_skip * x) / c_out  # N,2


def test_score_is_the_gaussian_closed_form():
    """grad log p of x_0 + noise for x_0 ~ N(0, C), from each formulation's ideal model."""
    C = GAUSSIAN_COV
    x = np.random.default_rng(0).standard_normal((7, 2)) * 2  # N,2
    f = DDPM(T=40)
    for t in (1, 10, 39):
        ab = f.alpha_bar[t]
        ref = -x @ np.linalg.inv(ab * C + (1 - ab) * np.eye(2))  # grad log N(0, A) at x_t
        assert_close(f"ddpm score t={t}", f.score(_IdealEps(f.alpha_bar, C), x, t), ref,
                     rtol=1e-12, atol=1e-12)  # float64 algebra only
    precond = EDMPrecond(1.4)
    f = EDM(precond=precond)
    for sigma in (0.01, 0.5, 3.0, 80.0):
        ref = -x @ np.linalg.inv(C + sigma ** 2 * np.eye(2))  # grad log N(0, C + sigma^2 I)
        assert_close(f"edm score sigma={sigma}", f.score(_IdealF(precond, C), x, sigma), ref,
                     rtol=1e-8, atol=1e-12)  # exp(4 log(sigma)/4) and D - x lose a few digits
    with pytest.raises(ValueError, match="sigma > 0"):
        f.score(_IdealF(precond, C), x, 0.0)
    with pytest.raises(ValueError, match="t = 0 has no noise"):
        DDPM(T=40).score(_IdealEps(DDPM(T=40).alpha_bar, C), x, 0)


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_score_is_what_the_sampler_follows(w):
    """EDM Euler: x_1 = x_0 + (t_1 - t_0) (-t_0 score(x_0)); DDPM's last step (no noise):
    x_0 = (x_1 + beta_1 score(x_1)) / sqrt(alpha_1). Guided, the score is eq. 5's."""
    base, aux = _nets(3)
    shape = base.sample_shape(6)
    for f in (EDM(precond=EDMPrecond(1.4), num_steps=5, solver="euler"), DDPM(T=6)):
        states = []
        f.sample(base, shape, np.random.default_rng(2), aux=aux, w=w,
                 on_step=lambda i, x, level: states.append((x, level)))
        if isinstance(f, EDM):
            (x0, t0), (x1, t1) = states[0], states[1]
            step = x0 + (t1 - t0) * (-t0 * f.score(base, x0, t0, aux=aux, w=w))
            assert_close("edm euler step", x1, step, rtol=1e-10, atol=1e-10)  # float64 reordering
        else:
            (x1, t), (x0, _) = states[-2], states[-1]
            beta = ddpm_betas(f.alpha_bar)[t]
            step = (x1 + beta * f.score(base, x1, t, aux=aux, w=w)) / math.sqrt(1 - beta)
            assert_close("ddpm last step", x0, step, rtol=1e-10, atol=1e-10)


def test_w0_sims_trajectory_is_the_base_trajectory(toy):
    name, cfg, fit = toy
    levels, base, sims = toy_trajectories(fit, cfg, 0.0, 5, n_points=9, run=1)
    assert base.shape == sims.shape == (STATES[name], 9, 2) and len(levels) == STATES[name]
    assert base.tobytes() == sims.tobytes()  # bit for bit: guidance is all that differs
    _, base2, sims2 = toy_trajectories(fit, cfg, 2.0, 5, n_points=9, run=1)
    assert base2.tobytes() == base.tobytes()
    assert sims2[0].tobytes() == base2[0].tobytes()  # the same initial noise ...
    assert not np.array_equal(sims2[-1], base2[-1])  # ... and guidance changes where it goes
    # a generator gives the same film as its seed; the end is the library's own step 4
    _, _, sims3 = toy_trajectories(fit, cfg, 2.0, np.random.default_rng(5), n_points=9, run=1)
    assert sims3.tobytes() == sims2.tobytes()
    drawn = sample_sims(fit.base, fit.aux, cfg, 2.0, 9, np.random.default_rng(5))  # 2,9,2 float32
    assert np.array_equal(sims2[-1].astype(np.float32), drawn[1])


def test_one_model_not_an_ensemble():
    cfg = SIMSConfig(formulation="edm", **TINY)
    base, aux = _nets(4, ensemble=None)
    levels, b, s = toy_trajectories(SIMSResult(base, aux, None, None), cfg, 1.0, 0, n_points=4)
    assert b.shape == s.shape == (5, 4, 2)


@pytest.mark.parametrize("every,extra", [(1, {}), (2, {"arrows_grid": 0}),
                                         (3, {"n_trails": 0, "fps": 2.5})])
def test_gif_is_written_with_one_frame_per_state(toy, tmp_path, every, extra):
    name, cfg, fit = toy
    path = tmp_path / "sampling.gif"
    kw = {"n_trails": 3, "arrows_grid": 5, **extra}
    n = write_toy_animation(fit, cfg, str(path), 2.0, 0, n_points=12, run=1, every=every, dpi=30,
                            **kw)
    K = STATES[name] - 1
    expected = len(range(0, K + 1, every)) + (1 if K % every else 0)  # and always the last
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == n == expected
    assert [p.name for p in tmp_path.iterdir()] == ["sampling.gif"]  # no temporary left over


def test_gif_with_a_guidance_interval(tmp_path):
    cfg = SIMSConfig(formulation="ddpm", interval=GuidanceInterval(first_step=2), **TINY)
    base, aux = _nets(5)
    n = write_toy_animation(SIMSResult(base, aux, None, None), cfg, str(tmp_path / "a.gif"), 1.0,
                            np.random.default_rng(0), n_points=5, dpi=30, arrows_grid=4, n_trails=2)
    assert n == STATES["ddpm"]


class _ImageModel:
    def sample_shape(self, n):
        return (n, 3, 8, 8)


BAD = [
    ({"path": "movie.png"}, "ending in .gif"),
    ({"path": "/no/such/folder/a.gif"}, "does not exist"),
    ({"w": float("nan")}, "w must be a finite number"),
    ({"w": "3"}, "w must be a finite number"),
    ({"rng": "seed"}, "rng must be an integer seed or a random generator"),
    ({"rng": -1}, "seed must be >= 0"),
    ({"n_points": 0}, "n_points must be an integer >= 1"),
    ({"run": 2}, "run must be below the number of runs, 2"),
    ({"run": -1}, "run must be an integer >= 0"),
    ({"run": True}, "run must be an integer >= 0"),
    ({"every": 0}, "every must be an integer >= 1"),
    ({"fps": 0}, "fps must be a finite positive number"),
    ({"lim": float("inf")}, "lim must be a finite positive number"),
    ({"dpi": 2}, "dpi must be an integer >= 10"),
    ({"arrows_grid": 1}, "arrows_grid must be 0"),
    ({"n_trails": 13}, "n_trails \\(13\\) must be at most n_points \\(12\\)"),
    ({"fit": SIMSResult(_ImageModel(), _ImageModel(), None, None)}, "2D toy models"),
]


@pytest.mark.parametrize("bad,message", BAD)
def test_bad_arguments_raise_one_line_value_errors(tmp_path, bad, message):
    base, aux = _nets(6)
    args = {"fit": SIMSResult(base, aux, None, None), "cfg": SIMSConfig(**TINY),
            "path": str(tmp_path / "a.gif"), "w": 1.0, "rng": 0, "n_points": 12, "n_trails": 3}
    args.update(bad)
    with pytest.raises(ValueError, match=message) as e:
        write_toy_animation(**args)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_toy_command_writes_the_animation(tmp_path):
    from minisims import toy
    gif = tmp_path / "out" / "sampling.gif"  # inside --outdir, which the command makes
    argv = ["--runs", "2", "--base-epochs", "2", "--aux-epochs", "1", "--n-real", "40",
            "--n-synth", "40", "--n-eval", "30", "--hidden", "8", "--omega", "1", "--quiet",
            "--no-plot", "--outdir", str(tmp_path / "out"), "--animate", str(gif)]
    assert toy.main(argv) == 0
    assert Image.open(gif).n_frames == 40  # DDPM: the noise and 39 steps


@pytest.mark.parametrize("bad", ["x.png", "/nonexistent-folder/x.gif"])
def test_toy_command_refuses_a_bad_animation_path_before_any_work(tmp_path, bad, capsys):
    from minisims import toy
    with pytest.raises(SystemExit) as e:
        toy.main(["--animate", bad, "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and not (tmp_path / "out").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
