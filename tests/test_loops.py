"""The self-consuming loops (minisims.loops): structure, random-stream arrangement, sweeps.

Micro models (8 wide, a few steps) keep every test to a fraction of a second; the properties
checked hold whatever the models learn.
"""
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from minisims import sims
from minisims.loops import loop as loop_module, sweeps as sweep_module
from minisims.loops.loop import Cell, LoopConfig, generation_one, run_loop_chunk
from minisims.loops.results import converged_ratio, load_results, ratio_curve, save_results
from minisims.loops.sweeps import sweep
from minisims.nn.mlp import MLPConfig
from minisims.sims import SIMSConfig


def micro(loop="augmentation", formulation="ddpm", generations=3):
    sims = SIMSConfig(formulation=formulation, mlp=MLPConfig(hidden=8, depth=2), base_epochs=3,
                      aux_epochs=2, n_synth=30, ddpm_T=6, num_steps=3)
    return LoopConfig(loop=loop, generations=generations, n_real=40, n_eval=20, sims=sims)


@pytest.mark.parametrize("loop", loop_module.LOOPS)
@pytest.mark.parametrize("formulation", ["ddpm", "edm"])
def test_sims_loop_at_w0_is_the_standard_loop_bit_for_bit(loop, formulation):
    cfg = micro(loop, formulation)
    std = run_loop_chunk(cfg, Cell(25, 0.0, "standard"), runs=2, seed=3)
    sims0 = run_loop_chunk(cfg, Cell(25, 0.0, "sims"), runs=2, seed=3)
    sims2 = run_loop_chunk(cfg, Cell(25, 2.0, "sims"), runs=2, seed=3)
    assert np.array_equal(std.mu, sims0.mu) and np.array_equal(std.cov, sims0.cov)
    # the guidance does change the loop (so the equality above is not vacuous) ...
    assert not np.array_equal(std.mu[:, 0], sims2.mu[:, 0])
    assert np.isfinite(sims2.mu).all()


def test_generation_one_matches_the_loops_first_generation():
    cfg = micro()
    g1 = generation_one(cfg, [0.0, 1.5], runs=2, seed=5)
    for w, method in ((0.0, "standard"), (1.5, "sims")):
        r = run_loop_chunk(cfg, Cell(10, w, method), runs=2, seed=5)
        assert np.array_equal(g1[w][0], r.mu[:, 0]) and np.array_equal(g1[w][1], r.cov[:, 0])


class Spy:
    """Record what each generation trains on and what it samples, through Algorithm 1's steps
    (minisims.sims), wherever the loop calls them from."""

    def __init__(self, monkeypatch):
        self.train_data, self.samples, self.aux_calls = [], [], 0
        real_train, real_synth, real_aux = sims.train_base, sims.synthesize, sims.train_aux

        def train_base(data, cfg, rng, progress=False):
            self.train_data.append(np.array(data))
            return real_train(data, cfg, rng, progress)

        def synthesize(net, cfg, n, rng, aux=None, w=0.0, progress=False):
            x = real_synth(net, cfg, n, rng, aux=aux, w=w, progress=progress)
            if n != cfg.n_synth or aux is not None:  # the loop's draw (sizes differ from S's)
                self.samples.append(np.array(x))
            return x

        def train_aux(base, synthetic, cfg, rng, progress=False):
            self.aux_calls += 1
            return real_aux(base, synthetic, cfg, rng, progress)

        for module in (sims, loop_module):
            for name, fn in (("train_base", train_base), ("synthesize", synthesize),
                             ("train_aux", train_aux)):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, fn)


@pytest.mark.parametrize("loop", loop_module.LOOPS)
@pytest.mark.parametrize("method", ["standard", "sims"])
def test_each_generation_trains_from_scratch_on_its_loops_data(loop, method, monkeypatch):
    cfg, n_s, R = micro(loop, generations=4), 25, 2
    spy = Spy(monkeypatch)
    run_loop_chunk(cfg, Cell(n_s, 1.0 if method == "sims" else 0.0, method), runs=R, seed=1)
    G = cfg.generations
    assert len(spy.train_data) == G and len(spy.samples) == G  # one fresh base per generation
    assert spy.aux_calls == (G if method == "sims" else 0)
    D_r1 = spy.train_data[0]
    assert D_r1.shape == (R, cfg.n_real, 2)
    for t in range(1, G):
        data, passed_on = spy.train_data[t], spy.samples[t - 1][:, :n_s]  # D^{t+1}, D_s^t
        if loop == "fully_synthetic":
            assert np.array_equal(data, passed_on)
        else:
            assert data.shape == (R, cfg.n_real + n_s, 2)
            assert np.array_equal(data[:, cfg.n_real:], passed_on)
            same_real = np.array_equal(data[:, :cfg.n_real], D_r1)
            assert same_real == (loop == "augmentation")  # fresh: a new real set every generation


def test_sweep_chunks_and_executors_agree(tmp_path):
    cfg = micro(generations=2)
    cells = [Cell(10, 0.0, "standard"), Cell(10, 2.0, "sims")]
    seen = []
    inline = sweep(cfg, cells, runs=3, seed=2, chunk_size=2, on_cell=lambda c, r: seen.append((c, r)))
    assert [c for c, _ in seen] == cells  # called as each cell completes, with its whole result
    assert all(np.array_equal(r.mu, inline[c].mu) for c, r in seen)
    with ThreadPoolExecutor(2) as ex:
        threads = sweep(cfg, cells, runs=3, seed=2, chunk_size=2, executor=ex, blas_threads=1)
    with ProcessPoolExecutor(2) as ex:
        procs = sweep(cfg, cells, runs=3, seed=2, chunk_size=2, executor=ex, blas_threads=1)
    for c in cells:
        r = inline[c]
        assert r.mu.shape == (3, 2, 2) and r.cov.shape == (3, 2, 2, 2)
        assert np.array_equal(r.mu, threads[c].mu) and np.array_equal(r.mu, procs[c].mu)
        # a chunk is run_loop_chunk on its runs: runs 0-1, then run 2
        assert np.array_equal(r.mu[:2], run_loop_chunk(cfg, c, 2, 2, first_run=0).mu)
        assert np.array_equal(r.mu[2:], run_loop_chunk(cfg, c, 1, 2, first_run=2).mu)
    # every run has its own streams: other chunk sizes give the same runs bit for bit
    for size in (1, 3):
        other = sweep(cfg, cells, runs=3, seed=2, chunk_size=size)
        assert all(np.array_equal(inline[c].mu, other[c].mu) and
                   np.array_equal(inline[c].cov, other[c].cov) for c in cells)
    # every cell saw the same real data and generation-1 base: standard == SIMS at w=0 per run
    path = str(tmp_path / "sweep.npz")
    save_results(path, cfg, inline, {"note": "test"})
    cfg2, back, meta = load_results(path)
    assert cfg2 == cfg and meta == {"note": "test"} and list(back) == cells
    for c in cells:
        assert np.array_equal(back[c].mu, inline[c].mu) and np.array_equal(back[c].cov, inline[c].cov)
    with np.load(path) as z:  # readable with numpy alone
        assert z["w2"].shape == (2, 3, 2) and np.allclose(z["w2"] ** 2, z["w2sq"])


def test_an_executor_failure_reaches_the_caller():
    bad = LoopConfig(generations=2, n_real=40, n_eval=20, sims=SIMSConfig(formulation="nope"))
    with pytest.raises(ValueError, match="unknown formulation"):
        sweep(bad, [Cell(5)], runs=1)


def test_ratios_and_windows():
    cfg = micro(generations=4)
    r = run_loop_chunk(cfg, Cell(10, 0.0, "standard"), runs=2, seed=0)
    d = r.distance(cfg.mean, cfg.cov).mean(axis=0)  # G
    curve = ratio_curve(r, cfg.mean, cfg.cov)
    assert curve[0] == 1.0 and np.allclose(curve, d / d[0], rtol=1e-12)
    assert np.isclose(converged_ratio(r, cfg.mean, cfg.cov, start=2), d[1:].mean() / d[0], rtol=1e-12)
    assert np.allclose(r.distance(cfg.mean, cfg.cov) ** 2, r.distance(cfg.mean, cfg.cov, squared=True))
    with pytest.raises(ValueError, match="window"):
        converged_ratio(r, cfg.mean, cfg.cov, start=5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="standard training has no guidance"):
        Cell(10, 1.0, "standard")
    with pytest.raises(ValueError, match="unknown loop"):
        LoopConfig(loop="circular")
    with pytest.raises(ValueError):
        sweep_module.chunk_sizes(0, 4)
    assert sweep_module.chunk_sizes(10, 4) == [4, 4, 2]
    cfg = LoopConfig()
    assert sweep_module.auto_chunk_size(cfg, [Cell(1000)], memory_mb=1) == 1
    assert sweep_module.auto_chunk_size(cfg, [Cell(125)], 256) >= sweep_module.auto_chunk_size(cfg, [Cell(1000)], 256)


def test_the_default_executor_runs_each_task_when_its_result_is_gathered(monkeypatch):
    calls, real = [], sweep_module.run_loop_chunk
    monkeypatch.setattr(sweep_module, "run_loop_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen = []
    sweep(micro(generations=1), [Cell(5), Cell(6)], runs=1, on_cell=lambda c, r: seen.append(len(calls)))
    assert seen == [1, 2]  # cell 1 was saved before cell 2 ran: partial results of long sweeps
