"""Algorithm 1 end to end at a small size, and the toy command line."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minisims import toy
from minisims.data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from minisims.metrics import gaussian_w2
from minisims.nn.mlp import MLPConfig
from minisims.sims import SIMSConfig, fit_sims, sample_sims, synthesize, train_aux, train_base


def _small(form="edm", **kw):
    return SIMSConfig(formulation=form, base_epochs=kw.pop("base_epochs", 40), aux_epochs=5,
                      n_synth=200, batch_size=kw.pop("batch_size", 250), num_steps=16, ddpm_T=12,
                      mlp=MLPConfig(hidden=32, depth=2), **kw)


def test_data_statistics():
    x = sample_gaussian(200000, np.random.default_rng(0), runs=1)
    assert x.shape == (1, 200000, 2) and x.dtype == np.float32
    assert np.abs(np.cov(x[0].T) - GAUSSIAN_COV).max() < 0.03


def test_aux_is_a_finetuned_copy_and_base_is_untouched(rng):
    cfg = _small()
    data = sample_gaussian(250, rng, runs=2)
    base, _ = train_base(data, cfg, rng)
    before = {k: v.copy() for k, v in base.state_dict().items()}
    S = synthesize(base, cfg, cfg.n_synth, rng)
    assert S.shape == (2, 200, 2) and np.isfinite(S).all()
    aux, loss = train_aux(base, S, cfg, rng)
    assert loss.shape == (5, 2)
    for k, v in base.state_dict().items():
        assert np.array_equal(v, before[k])  # base untouched
        assert not np.array_equal(aux.state_dict()[k], v)  # aux moved away from it


def test_aux_budget_in_images_seen(rng):
    cfg = _small(aux_images=600)  # 600 samples seen over |S| = 200: 3 epochs
    data = sample_gaussian(100, rng, runs=1)
    fit = fit_sims(data, cfg, rng)
    assert fit.aux_loss.shape == (3, 1)


@pytest.mark.parametrize("form", ["ddpm", "edm"])
def test_training_learns_the_gaussian(form):
    """A trained ensemble's samples are far closer to p_r than an untrained one's."""
    rng = np.random.default_rng(0)
    cfg = _small(form, base_epochs=60, batch_size=125)
    data = sample_gaussian(500, rng, runs=3)
    fit = fit_sims(data, cfg, rng)
    assert fit.base_loss[-1].mean() < fit.base_loss[0].mean()
    x = sample_sims(fit.base, fit.aux, cfg, 0.0, 1000, rng)
    d = gaussian_w2(x, GAUSSIAN_MEAN, GAUSSIAN_COV)
    untrained = sample_sims(cfg.make_net(3, rng), fit.aux, cfg, 0.0, 1000, rng)
    assert d.mean() < 0.6 and d.mean() < 0.5 * gaussian_w2(untrained, GAUSSIAN_MEAN, GAUSSIAN_COV).mean()


def test_cli_runs_and_writes(tmp_path, capsys):
    out = tmp_path / "o"
    rc = toy.main(["--omega", "0.5,2", "--runs", "2", "--base-epochs", "3", "--aux-epochs", "2",
                   "--n-real", "60", "--n-synth", "50", "--n-eval", "80", "--outdir", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "0 (base)" in text and "ratio to base" in text
    res = json.loads((out / "toy_results.json").read_text())
    assert res["omega"] == [0.0, 0.5, 2.0] and len(res["distance_per_run"]["2.0"]) == 2
    assert (out / "toy_sims.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,msg", [
    (["--omega", "abc"], "not a number"),
    (["--omega", "nan"], "not a finite number"),
    (["--runs", "-1"], "below the minimum"),
    (["--n-real", "0"], "below the minimum"),
    (["--lr", "0"], "must be positive"),
    (["--formulation", "gan"], "invalid choice"),
])
def test_cli_bad_input_is_one_line(argv, msg):
    p = subprocess.run([sys.executable, "-m", "minisims.toy", *argv], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and msg in p.stderr and "Traceback" not in p.stderr


def test_cli_unwritable_outdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = subprocess.run([sys.executable, "-m", "minisims.toy", "--outdir", str(blocker / "sub")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot write" in p.stderr and "Traceback" not in p.stderr
