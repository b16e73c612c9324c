"""Distribution shift (minisims.shift, minisims.data.mixture): the two-group toy of Figure 6."""
from dataclasses import replace

import numpy as np
import pytest

from minisims.data.mixture import MIX_COV, MIX_MEANS, classify, sample_mixture, select_mix
from minisims.shift import ShiftConfig, fit_shift, group_stats, rng_for, shift_sweep
from minisims.sims import synthesize


def test_sample_mixture_has_the_exact_mix_and_the_components(rng):
    x, labels = sample_mixture(1000, rng, runs=3, frac0=0.3)
    assert x.shape == (3, 1000, 2) and labels.shape == (3, 1000)
    assert ((labels == 0).sum(axis=1) == 300).all()
    g0 = x[labels == 0]
    assert np.allclose(g0.mean(0), MIX_MEANS[0], atol=0.1)  # 900 points: s.e. 0.024
    assert np.allclose(np.cov(g0.T), MIX_COV, atol=0.1)


def test_the_classifier_recovers_well_separated_groups(rng):
    x, labels = sample_mixture(2000, rng, runs=2)
    errors = (classify(x) != labels).sum()
    assert errors <= 3  # 4000 points, Bayes error Phi(-4) = 3.2e-5: 0.13 expected errors


def test_select_mix_draws_the_requested_mix_from_the_pool(rng):
    x, labels = sample_mixture(600, rng, runs=2, frac0=0.5)
    S = select_mix(x, labels, 200, 0.3, rng)
    assert S.shape == (2, 200, 2)
    assert ((classify(S) == 0).sum(axis=1) == 60).all()
    for r in range(2):  # every selected point is a pool point, none twice
        pool = {tuple(p) for p in x[r]}
        picked = [tuple(p) for p in S[r]]
        assert set(picked) <= pool and len(set(picked)) == 200
    with pytest.raises(ValueError, match="larger pool"):
        select_mix(x, labels, 600, 0.9, rng)


def small_cfg():
    cfg = ShiftConfig(n_real=500, n_eval=1000)
    sims = replace(cfg.sims, n_synth=500, base_epochs=200, aux_epochs=300, batch_size=128,
                   num_steps=12, mlp=replace(cfg.sims.mlp, hidden=32))
    return replace(cfg, sims=sims)


def test_w_minus_one_is_the_aux_model_and_w_zero_the_base():
    cfg = replace(small_cfg(), n_eval=200)
    cfg = replace(cfg, sims=replace(cfg.sims, base_epochs=5, aux_epochs=5))
    base, aux, _ = fit_shift(cfg, runs=2, seed=0)
    draw = lambda net, neg, w: synthesize(net, cfg.sims, 200, rng_for(0, "sample", 2), aux=neg, w=w)
    assert np.array_equal(draw(base, aux, -1.0), draw(aux, None, 0.0))  # eq. 5 at w = -1: exactly aux
    assert np.array_equal(draw(base, aux, 0.0), draw(base, None, 0.0))  # and at w = 0: exactly base


def test_the_mix_moves_from_the_aux_mix_through_the_base_mix_toward_the_target():
    """The group-0 fraction rises with w: w = -1 (exactly the aux model) lies between the aux
    set's mix and the base mix, nearer the aux set's; w = 0 gives the base mix within 4 standard
    errors over runs; w = 1 goes past the base.

    The aux model is *not* asserted to reproduce its training mix: it is fine-tuned from the base
    for a short budget and keeps some of the base's mix (here 0.348-0.354 for an aux set of 0.30,
    under OpenBLAS's Prescott, Nehalem, Sandybridge, Haswell and SkylakeX kernels, 1 and 2
    threads; the paper's aux, trained on 30%, gives 32%). That bias is the model's, not sampling
    error, so it sits outside the run-to-run error; the bounds below hold it with room to spare."""
    cfg, R = small_cfg(), 6
    r = shift_sweep(cfg, [-1.0, 0.0, 1.0], runs=R, seed=0)
    assert np.allclose(r["aux_set_frac"], cfg.aux_frac)  # the aux set is exactly 30/70
    f = r["frac0"]  # W,R
    m, se = f.mean(1), f.std(1, ddof=1) / np.sqrt(R)
    se = np.maximum(se, np.sqrt(0.25 / (R * cfg.n_eval)))  # never below the binomial sampling error
    assert cfg.aux_frac - 4 * se[0] < m[0] < (cfg.aux_frac + cfg.base_frac) / 2, (m, se)
    assert abs(m[1] - cfg.base_frac) < 4 * se[1], (m, se)
    assert m[0] + 4 * se[0] < m[1] < m[2] - 4 * se[2], (m, se)  # each step moves by > 4 s.e.
    assert r["dist"].shape == (3, R, 2) and np.isfinite(r["dist"]).all()
    # every run has its own streams: runs 4-5 alone, as a chunk of their own, are the same runs
    tail = shift_sweep(cfg, [-1.0, 0.0, 1.0], runs=R, seed=0, chunk_size=4)
    assert np.array_equal(tail["frac0"], r["frac0"]) and np.array_equal(tail["dist"], r["dist"], equal_nan=True)


def test_group_stats_on_true_samples_is_near_zero(rng):
    cfg = ShiftConfig()
    x, _ = sample_mixture(4000, rng, runs=2, frac0=0.7)
    frac0, dist = group_stats(x, cfg)
    assert np.allclose(frac0, 0.7, atol=1e-3)  # at most a couple of misclassified points
    assert (dist < 0.06).all()  # W2 of a 1200-2800 point fit of std-0.5 groups: about 0.02
