"""Experiments built on the loops: polluted training (Figure 5) and autoguidance beside SIMS."""
import numpy as np

from minisims.autoguidance import bad_config, bad_model_factory
from minisims.loops.loop import Cell, LoopConfig, generation_one, run_loop_chunk
from minisims.metrics import gaussian_w2_from_moments
from minisims.nn.mlp import MLPConfig
from minisims.polluted import polluted_experiment
from minisims.sims import SIMSConfig


def micro():
    sims = SIMSConfig(mlp=MLPConfig(hidden=8, depth=2), base_epochs=3, aux_epochs=2, n_synth=30,
                      ddpm_T=6)
    return LoopConfig(n_real=40, n_eval=20, sims=sims)


def test_polluted_experiment_shapes_best_w_and_its_standard_row():
    cfg = micro()
    r = polluted_experiment(cfg, [20, 10], [2.0, 1.0], runs=3, seed=4, chunk_size=2)
    one = polluted_experiment(cfg, [20, 10], [2.0, 1.0], runs=3, seed=4, chunk_size=3)
    assert np.array_equal(r["I"], one["I"]) and np.array_equal(r["P"], one["P"])  # chunks don't matter
    assert list(r["pollution"]) == [10, 20] and list(r["omega"]) == [0.0, 1.0, 2.0]
    assert r["I"].shape == (3, 3) and r["P"].shape == (2, 3, 3)
    mI, mP = r["I"].mean(1), r["P"].mean(2)
    assert r["ST-I"] == mI[0] and r["SIMS-I"] == mI[1:].min()  # best over the SIMS w only
    assert np.array_equal(r["ST-P"], mP[:, 0]) and np.array_equal(r["SIMS-P"], mP[:, 1:].min(1))
    # ST-I is generation 1 of the standard loop: same data, base and sampling noise
    loop = run_loop_chunk(cfg, Cell(10, 0.0, "standard"), runs=2, seed=4, first_run=0)
    d = gaussian_w2_from_moments(loop.mu[:, 0], loop.cov[:, 0], np.asarray(cfg.mean), np.asarray(cfg.cov))
    assert np.allclose(r["I"][0, :2], d, rtol=1e-12)


def test_autoguidance_uses_a_weaker_model_and_shares_the_base():
    cfg = micro()
    bad = bad_config(cfg.sims, hidden=4, epochs=1)
    assert bad.mlp.hidden == 4 and bad.base_epochs == 1 and bad.mlp.depth == cfg.sims.mlp.depth
    assert bad_config(cfg.sims).mlp.hidden == cfg.sims.mlp.hidden  # None keeps the base's
    sims = generation_one(cfg, [0.0, 2.0], runs=2, seed=1)
    auto = generation_one(cfg, [0.0, 2.0], runs=2, seed=1, aux_factory=bad_model_factory(cfg.sims, hidden=4))
    assert np.array_equal(sims[0.0][0], auto[0.0][0])  # w = 0: the same base model, same draws
    assert not np.array_equal(sims[2.0][0], auto[2.0][0])  # a different negative model
