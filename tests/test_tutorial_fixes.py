"""Fixes from issue 25: negative values after a space on the command lines, SharedEncoderPair
refusing an aux whose encoder is not frozen (exercise 04.3), and VP's network target."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minisims.diffusion import EDM, EDMPrecond, VPPrecond
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- --omega -1,0,3

def test_toy_takes_a_negative_omega_list_after_a_space(tmp_path):
    """Exercise 01.1's command, at the toy's smallest settings (a few seconds)."""
    cmd = [sys.executable, "-m", "minisims.toy", "--omega", "-1,0,3", "--runs", "1", "--n-real", "50",
           "--n-synth", "50", "--base-epochs", "2", "--aux-epochs", "1", "--n-eval", "50",
           "--hidden", "8", "--no-plot", "--quiet", "--outdir", str(tmp_path)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    assert "-1" in rows and "3" in rows, p.stdout  # both guided rows are in the table


@pytest.mark.parametrize("argv, expected", [
    (["--omega", "-1,0,3"], [-1.0, 0.0, 3.0]),
    (["-w", "-1,0,3"], [-1.0, 0.0, 3.0]),       # the short option
    (["--omega", "-1e-3"], [-0.001]),            # not a plain negative number to argparse
    (["--omega", "-.5,2"], [-0.5, 2.0]),
    (["--omega=-2,1"], [-2.0, 1.0]),             # the form that always worked
    (["--omega", "2", "--seed", "1"], [2.0]),    # nothing to join
])
def test_toy_parser_joins_negative_values(argv, expected):
    from minisims.toy import build_parser
    assert build_parser().parse_args(argv).omega == expected


def test_every_list_option_takes_negative_values():
    """The figure commands and the image pipeline's subcommands share the one parser class."""
    from minisims.figures import autoguidance, figure4, figure5, figure6, when_sims_helps
    from minisims.images import cli
    args = figure4.build_parser().parse_args(["--omega", "-2,1", "--gen1-omega", "-1,0,2"])
    assert args.omega == [-2.0, 1.0] and args.gen1_omega == [-1.0, 0.0, 2.0]
    for module in (autoguidance, figure5, figure6, when_sims_helps):
        assert module.build_parser().parse_args(["--omega", "-1,0.5"]).omega == [-1.0, 0.5], module
    images = cli.build_parser()
    assert images.parse_args(["sims", "--omegas", "-1,0,1"]).omegas == [-1.0, 0.0, 1.0]
    assert images.parse_args(["sample", "--w", "-1,0.5"]).w == [-1.0, 0.5]


@pytest.mark.parametrize("argv", [["--omega", "--seed", "1"], ["--omega", "-x"], ["--seed", "-1"]])
def test_joining_does_not_swallow_options_or_bounds(argv, capsys):
    """An option after --omega is still an option (so --omega lacks its value), a word that is not
    a number still fails, and a joined value still meets its option's bounds."""
    from minisims.toy import build_parser
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_nothing_after_double_dash_is_joined():
    from minisims.cli_util import join_negative_values
    from minisims.toy import build_parser
    args = ["--omega", "-1,2", "--", "--omega", "-3"]
    assert join_negative_values(build_parser(), args) == ["--omega=-1,2", "--", "--omega", "-3"]


# ---------------------------------------------------------------- exercise 04.3

TINY = dict(img_resolution=8, in_channels=1, out_channels=1, channels=8, channel_mult=(1, 2),
            blocks_per_level=1, attn_resolutions=(), dropout=0.0)


def _pair_parts():
    rng = np.random.default_rng(0)
    base = UNet(UNetConfig(**TINY), rng, dtype=np.float64)
    aux = base.copy()
    aux.train_encoder = False  # what trainable="decoder" sets
    for _, mod, k in aux.decoder.named_parameters():  # a stand-in for decoder fine-tuning
        mod.params[k] += 0.1 * rng.standard_normal(mod.params[k].shape)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3, num_steps=2)
    return edm, base, aux


def test_shared_encoder_accepts_a_frozen_encoder():
    edm, base, aux = _pair_parts()
    SharedEncoderPair(edm, base, aux)


def test_shared_encoder_refuses_an_aux_whose_encoder_trains():
    """Exercise 04.3: the encoders are still equal, but the aux says its encoder trains."""
    edm, base, aux = _pair_parts()
    aux.train_encoder = True
    with pytest.raises(ValueError, match="train_encoder"):
        SharedEncoderPair(edm, base, aux)


# ---------------------------------------------------------------- VP's target (diffusion.py's VPPrecond)

@pytest.mark.parametrize("sigma", [0.01, 1.0, 80.0])
def test_vp_network_target_is_plus_epsilon(sigma):
    """F's target (y - c_skip x) / c_out is +eps at every noise level (x = y + sigma eps)."""
    rng = np.random.default_rng(1)
    y, eps = rng.standard_normal((2, 1000))
    c_skip, c_out, _, _ = VPPrecond().coefficients(np.float64(sigma))
    target = (y - c_skip * (y + sigma * eps)) / c_out
    np.testing.assert_allclose(target, eps, rtol=0, atol=1e-9)  # rounding of y + sigma eps only
