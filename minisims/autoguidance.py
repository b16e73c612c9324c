"""Autoguidance (Karras et al. 2024b) beside SIMS: the negative model is a *bad version of the base*.

SIMS and autoguidance sample with the same combination (paper eq. 5, minisims.guidance):

    D = (1 + w) D_base - w D_neg        (autoguidance writes D_bad + g (D_good - D_bad), g = 1 + w)

They differ only in where the negative comes from:

    SIMS           the base fine-tuned on the base's own synthetic data (it knows the base's errors,
                   amplified: the extrapolation moves away from them)
    autoguidance   a smaller and/or less trained model trained on the same real data (its errors
                   are those of weak capacity or budget, hoping they point the way the base errs)

:func:`bad_model` trains that weaker model; it plugs into :func:`minisims.loops.generation_one`
through ``aux_factory`` so both methods share the real data, the base and the sampling noise.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from .sims import SIMSConfig, train_base


def bad_config(cfg: SIMSConfig, hidden: int | None = None, epochs: int | None = None) -> SIMSConfig:
    """The base's settings with a smaller width and/or a shorter budget (None keeps the base's)."""
    return replace(cfg, mlp=replace(cfg.mlp, hidden=hidden or cfg.mlp.hidden),
                   base_epochs=cfg.base_epochs if epochs is None else epochs)


def bad_model(data, cfg: SIMSConfig, rng, hidden: int | None = None, epochs: int | None = None):
    """Train the 'bad' model from scratch on the real data (R,n,D), like the base but weaker."""
    net, _ = train_base(data, bad_config(cfg, hidden, epochs), rng)
    return net


def bad_model_factory(cfg: SIMSConfig, hidden: int | None = None, epochs: int | None = None):
    """An ``aux_factory(D_r, base, rng)`` for generation_one that returns the bad model (a partial
    of a top-level function, so that it pickles for a process pool or a Dask cluster)."""
    return partial(_bad_aux, cfg=cfg, hidden=hidden, epochs=epochs)


def _bad_aux(D_r, base, rng, cfg: SIMSConfig, hidden: int | None, epochs: int | None):
    return bad_model(D_r, cfg, rng, hidden, epochs)
