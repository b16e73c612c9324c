"""The training loop, one for every model (the toy MLP ensemble and the UNet on images), and its
optimiser: Adam and the EMA of the weights.

# R ensemble members, n training samples, B batch, S one sample's shape ((D,) points, (C,H,W) images)
The data are (R,n,*S) when the formulation trains an ensemble (``formulation.member_ndim == 1``,
the toy: every member sees its own data in its own shuffled order and all members step together)
and (n,*S) for one model (``member_ndim == 0``, images).

One step: draw a shuffled mini-batch, ``formulation.loss_and_grad`` (forward, loss, backward into
the parameters' grads), Adam, then the EMA of the weights if one is kept. The budget is counted in
epochs (full passes over the data) or in samples seen per member, EDM's "images seen"; the run
stops at the first step boundary where that many have been seen.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import backend, ops
from .nn.layers import Module
from .streams import Streams

TRAINABLE = ("all", "decoder")
MAX_STEPS = 10 ** 7  # a run's schedule (one int per step) is held in memory: 80 MB at this size


# ================================================================================================
# Adam and an exponential moving average (EMA) of the weights, both elementwise
# ================================================================================================
# Both work on any leading ensemble axis: every entry of every parameter is updated on its own, so
# R models in one array are R independent optimisations.
#
# A training step runs ``opt.step(ema)``: Adam's update of every parameter, then the EMA of the new
# weights, written out in :func:`minisims.ops.adam_ema` (one pass over each parameter, or one
# kernel launch over all of them on the GPU, on the fast path: the same numbers bit for bit,
# tests/test_kernels_fused.py).


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction; updates the parameters in place."""

    def __init__(self, model: Module, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.model, self.lr, self.betas, self.eps = model, lr, betas, eps
        self.t = 0
        self.m = {n: backend.xp(m.params[k]).zeros_like(m.params[k]) for n, m, k in model.named_parameters()}
        self.v = {n: backend.xp(m.params[k]).zeros_like(m.params[k]) for n, m, k in model.named_parameters()}

    def step(self, ema: "EMA | None" = None):
        """One Adam step on every parameter, then ``ema``'s update when one is given. The EMA may
        cover more than the optimiser trains (the whole UNet while Adam trains its decoder): its
        other parameters get the EMA update alone, as ``ema.update()`` gives them."""
        self.t += 1
        entries = {id(mod.params[k]): (mod.params[k], mod.grads[k], self.m[name], self.v[name], None)
                   for name, mod, k in self.model.named_parameters()}  # p, g, m, v, shadow
        if ema is not None:
            for (_, src, k), (_, dst, _) in zip(ema.model.named_parameters(), ema.shadow.named_parameters()):
                p = src.params[k]
                p_, g, m, v, _ = entries.get(id(p), (p, None, None, None, None))
                entries[id(p)] = (p_, g, m, v, dst.params[k])
        ops.adam_ema(list(entries.values()), self.lr, self.betas, self.eps, self.t,
                     None if ema is None else ema.beta)


class EMA:
    """Shadow weights theta_ema <- beta theta_ema + (1 - beta) theta after each step.

    ``beta`` may be given directly or as a half-life in optimizer steps (EDM's convention counts
    images; divide by the batch size to get steps). A training step updates it through
    ``Adam.step(ema)``; :meth:`update` alone is the same update for a model trained otherwise.
    """

    def __init__(self, model: Module, beta: float | None = None, half_life_steps: float | None = None):
        if (beta is None) == (half_life_steps is None):
            raise ValueError("give exactly one of beta, half_life_steps")
        self.beta = beta if beta is not None else 0.5 ** (1.0 / half_life_steps)
        self.model = model
        self.shadow = model.copy()

    def update(self):
        for (_, m_src, k), (_, m_dst, _) in zip(self.model.named_parameters(), self.shadow.named_parameters()):
            dst = m_dst.params[k]
            dst *= self.beta
            dst += (1 - self.beta) * m_src.params[k]


# ================================================================================================
# The training loop
# ================================================================================================

@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Give the budget as ``epochs`` or ``images`` (images wins)."""
    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int | None = None               # budget: full passes over the data ...
    images: int | None = None               # ... or samples seen per member (EDM's images seen)
    warmup_images: int = 0                  # the learning rate ramps up linearly over these
    ema_half_life_images: float | None = None  # EMA of the weights, half-life in images (EDM)
    trainable: str = "all"                  # all | decoder: fine-tune the decoder, encoder frozen
    hflip: bool = False                     # mirror images left-right at random (EDM's xflip)
    checkpoint_every_images: int | None = None  # with a checkpoint path: save this often

    def __post_init__(self):
        if not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"need lr > 0 and batch_size >= 1, got {self.lr}, {self.batch_size}")
        if self.images is None and self.epochs is None:
            raise ValueError("give a training budget: epochs or images")
        if (self.images is not None and self.images < 0) or (self.epochs is not None and self.epochs < 0):
            raise ValueError(f"the budget must be >= 0, got epochs={self.epochs}, images={self.images}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.ema_half_life_images is not None and not self.ema_half_life_images > 0:
            raise ValueError(f"ema_half_life_images must be positive, got {self.ema_half_life_images}")
        if self.images is not None and -(-self.images // self.batch_size) > MAX_STEPS:
            raise ValueError(f"a budget of {self.images:,} images at batch {self.batch_size} is more "
                             f"than {MAX_STEPS:,} steps")

    def check_steps(self, n: int) -> None:
        """ValueError (one line) when the budget over n samples is more than MAX_STEPS steps."""
        per_epoch = -(-n // self.batch_size)
        steps = per_epoch * (self.epochs if self.images is None else -(-self.images // max(n, 1)))
        if steps > MAX_STEPS:
            raise ValueError(f"this training budget is {steps:,} steps over {n:,} samples, more "
                             f"than the {MAX_STEPS:,} a run takes")

    def schedule(self, n: int) -> list[list[int]]:
        """The batch sizes of every epoch over n samples per member: [[B, ..., B, rest], ...].
        With an images budget the last epoch stops at the first step that reaches it."""
        self.check_steps(n)
        per_epoch = [min(self.batch_size, n - s) for s in range(0, n, self.batch_size)]
        if self.images is None:
            return [per_epoch] * self.epochs
        epochs, seen = [], 0
        while seen < self.images:
            batches = []
            for b in per_epoch:
                if seen >= self.images:
                    break
                batches.append(b)
                seen += b
            epochs.append(batches)
        return epochs


@dataclass
class TrainResult:
    history: np.ndarray      # epochs,R (ensemble) or epochs, the mean loss of each epoch
    ema: object = None       # the EMA model (a copy of the network) when one was kept
    steps: int = 0
    images: int = 0          # samples seen per member
    diverged: np.ndarray | None = None  # R: the step (1-based) each member's loss first became
                                        # NaN or inf, 0 if never (ensembles only)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step. No checkpoint is written after it,
    so the last one on disk is the last good state."""


# Keyed random streams for training given an integer seed: the shuffle of epoch e and every draw
# of step k (flips, noise levels, noise) come from their own generators, keyed by (seed, e) and
# (seed, k) alone. A run can then stop after any step and resume bit for bit on any device, with
# no generator state to save.
TRAIN_STREAMS = Streams(("init", "shuffle", "step"))


def init_generator(rng):
    """The generator that initialises a network: ``rng`` itself, or the "init" stream of a seed."""
    return TRAIN_STREAMS.rng(int(rng), 0, "init") if _is_seed(rng) else rng


def _is_seed(rng) -> bool:
    return isinstance(rng, (int, np.integer))


def trainable_part(net, trainable: str):
    """The module whose parameters the optimizer updates. 'decoder' freezes the encoder of a
    network that has one (the UNet): its backward then stops at the decoder."""
    if trainable == "all":
        return net
    if not hasattr(net, "decoder") or not hasattr(net, "train_encoder"):
        raise ValueError(f"trainable='decoder' needs a network with an encoder and a decoder "
                         f"(the UNet); {type(net).__name__} has none: use trainable='all'")
    net.train_encoder = False
    return net.decoder


def _batch(data, perm, start: int, size: int, members: bool):
    idx = perm[..., start:start + size]  # (R,)B
    if members:
        xp = backend.xp(data)
        return data[xp.arange(data.shape[0])[:, None], idx]  # R,B,*S
    return data[idx]  # B,*S


def _hflip(y, rng):
    """Mirror each image of a batch (B,C,H,W) left-right with probability 1/2."""
    xp = backend.xp(y)
    flip = rng.random(y.shape[0]) < 0.5  # B
    return xp.where(flip[:, None, None, None], y[..., ::-1], y)  # B,C,H,W


@dataclass
class _State:
    """Where a run is: enough to continue it exactly (saved in every checkpoint)."""
    epoch: int = 0          # the epoch in progress
    batch: int = 0          # batches of it already taken
    seen: int = 0           # samples seen per member
    steps: int = 0
    next_save: int = 0      # samples seen at which the next checkpoint is due (0: none)


def train(net, formulation, data, cfg: TrainConfig, rng, *, progress: bool | str = False,
          checkpoint: str | None = None, resume: bool = False, meta: dict | None = None) -> TrainResult:
    """Train ``net`` in place on ``data`` ((R,n,*S) or (n,*S), see the module docstring).

    ``rng`` is a generator, which draws the shuffles and (through the formulation) the noise in
    one sequence, or an integer seed, which gives every epoch's shuffle and every step's draws
    their own keyed stream (:data:`TRAIN_STREAMS`). With ``checkpoint`` (a path) the network, its
    EMA, the optimizer and the position in the run are saved atomically every
    ``cfg.checkpoint_every_images`` samples and at the end; ``resume=True`` continues from that
    file, and with a seed the resumed run equals the uninterrupted one bit for bit. A NaN or inf
    loss raises :class:`TrainingDiverged` naming the step, and writes no checkpoint after it.
    ``cfg.hflip`` mirrors images (B,C,H,W) at random; a network with dropout layers (p > 0) has
    them on during training, with masks drawn from the step's generator, and off afterwards.
    Returns a :class:`TrainResult`.
    One toy epoch at batch 2048 over n = 1000 points is one full-batch step, as in the paper's toy.
    """
    xp = backend.xp(data)
    members = formulation.member_ndim == 1
    n = data.shape[1] if members else data.shape[0]
    lead = (data.shape[0],) if members else ()
    if n < 1:
        raise ValueError("cannot train on an empty data set")
    if cfg.hflip and (members or data.ndim != 4):
        raise ValueError("hflip mirrors images: it needs one model's data (N,C,H,W)")
    if resume and not (checkpoint and _is_seed(rng)):
        raise ValueError("resume needs a checkpoint path and an integer seed as rng (keyed "
                         "streams: a generator's position cannot be restored exactly)")
    keyed = _is_seed(rng)
    schedule = cfg.schedule(n)
    opt = Adam(trainable_part(net, cfg.trainable), lr=cfg.lr)
    ema = None if cfg.ema_half_life_images is None else \
        EMA(net, beta=0.5 ** (cfg.batch_size / cfg.ema_half_life_images))
    history = [None] * len(schedule)  # each epoch's mean loss, kept on the device until needed
    st, total = _State(next_save=cfg.checkpoint_every_images or 0), 0.0
    if resume and os.path.exists(checkpoint):
        st, total = _load(checkpoint, net, ema, opt, history, xp)
    bar = None
    if progress:
        from .progress import bar as progress_bar
        bar = progress_bar(total=sum(map(len, schedule)), initial=st.steps, unit="step", leave=False,
                           desc=progress if isinstance(progress, str) else "train")
    dropout = hasattr(net, "dropouts") and any(d.p > 0 for d in net.dropouts())
    bad = xp.full(lead, -1, dtype=np.int64)  # (R,) first step whose loss was not finite, on device
    t0, seen0 = time.perf_counter(), st.seen
    # Host synchronisation happens only at checkpoints, in the progress bar (once an epoch), at
    # the end, and on NumPy (where it is free) once an epoch: never inside a step.
    for epoch in range(st.epoch, len(schedule)):
        batches = schedule[epoch]
        shuffle_rng = TRAIN_STREAMS.rng(int(rng), epoch, "shuffle") if keyed else rng
        perm = xp.argsort(shuffle_rng.random(lead + (n,)), axis=-1)  # (R,)n, a shuffle per member
        if epoch > st.epoch or st.batch == 0:
            total = 0.0
        for b in range(st.batch if epoch == st.epoch else 0, len(batches)):
            size = batches[b]
            step_rng = TRAIN_STREAMS.rng(int(rng), st.steps, "step") if keyed else rng
            y = _batch(data, perm, sum(batches[:b]), size, members)  # (R,)B,*S
            if cfg.hflip:
                y = _hflip(y, step_rng)  # B,C,H,W
            if dropout:  # masks from this step's draws, so a resumed run draws the same ones
                net.set_dropout(step_rng)
            if cfg.warmup_images:  # linear warm-up, counted in images seen after this step
                opt.lr = cfg.lr * min(1.0, (st.seen + size) / cfg.warmup_images)
            net.zero_grad()
            loss = formulation.loss_and_grad(net, y, step_rng)  # (R,)
            opt.step(ema)  # Adam, then the EMA update (one kernel on the GPU)
            bad = xp.where((bad < 0) & ~xp.isfinite(loss), st.steps, bad)  # (R,), stays on device
            total = total + loss * size
            st.seen, st.steps, st.batch = st.seen + size, st.steps + 1, b + 1
            if checkpoint and st.next_save and st.seen >= st.next_save:
                st.next_save += cfg.checkpoint_every_images
                _check_finite(bad, formulation, members)
                _save(checkpoint, net, ema, opt, cfg, st, _host(history, lead), total, meta)
            if bar is not None:
                bar.update(1)
        history[epoch] = total / max(sum(batches), 1)  # (R,)
        st.epoch, st.batch = epoch + 1, 0
        if xp is np:
            _check_finite(bad, formulation, members)
        if bar is not None:
            bar.set_postfix(loss=f"{float(np.mean(backend.to_numpy(history[epoch]))):.4g}",
                            img_s=f"{(st.seen - seen0) / (time.perf_counter() - t0):.0f}")
    if bar is not None:
        bar.close()
    if dropout:
        net.set_dropout(None)  # off for sampling
    _check_finite(bad, formulation, members)
    history = _host(history, lead)
    if checkpoint:  # the final save says the run is complete
        _save(checkpoint, net, ema, opt, cfg, st, history, 0.0, {**(meta or {}), "finished": True})
    return TrainResult(history, ema.shadow if ema is not None else None, st.steps, st.seen,
                       backend.to_numpy(bad) + 1 if members else None)


def _host(history, lead) -> np.ndarray:
    """The epochs' mean losses as one host array (epochs,(R)); epochs not yet run are 0."""
    out = np.zeros((len(history),) + lead)
    for e, row in enumerate(history):
        if row is not None:
            out[e] = backend.to_numpy(row)
    return out


def _check_finite(bad, formulation, members: bool = False):
    """Raise for one model whose loss went non-finite (an ensemble's members are reported)."""
    if members:
        return
    step = int(backend.to_numpy(bad))
    if step >= 0:
        raise TrainingDiverged(f"the {formulation.name} loss became NaN or inf at step {step + 1}: "
                               "training stopped; the last checkpoint (if any) is from before it")


def _save(path, net, ema, opt, cfg, st: _State, history, total, meta):
    from .checkpoint import save_checkpoint  # only runs with a checkpoint load it
    extra = {"adam_m": opt.m, "adam_v": opt.v,
             "run": {"history": history, "total": backend.to_numpy(total)}}
    if ema is not None:
        extra["ema"] = ema.shadow.state_dict()
    save_checkpoint(path, net, {**(meta or {}), "train": asdict(cfg), "state": asdict(st),
                                "images_seen": st.seen, "steps": st.steps, "adam_t": opt.t},
                    extra=extra)


def _load(path, net, ema, opt, history, xp):
    """Restore a run saved by :func:`_save` into net, ema and opt; returns (state, total).
    Everything is read and checked before anything changes, so a damaged or foreign file leaves
    the run as it was (a ValueError naming the file)."""
    from .checkpoint import load_checkpoint, read_checkpoint
    _, meta = read_checkpoint(path)
    run, _ = read_checkpoint(path, "run")
    moments = {g: read_checkpoint(path, g)[0] for g in ("adam_m", "adam_v")}
    for g, mine in (("adam_m", opt.m), ("adam_v", opt.v)):
        if set(moments[g]) != set(mine) or any(moments[g][k].shape != tuple(a.shape) for k, a in mine.items()):
            raise ValueError(f"{path}: its optimizer state does not fit this model (another "
                             "network, or another trainable part)")
    if len(run["history"]) != len(history):
        raise ValueError(f"{path} is from a run with another schedule "
                         f"({len(run['history'])} epochs, not {len(history)})")
    if "state" not in meta or "adam_t" not in meta:
        raise ValueError(f"{path} is not a training checkpoint (no run state): cannot resume from it")
    ema_state = read_checkpoint(path, "ema")[0] if ema is not None else None
    load_checkpoint(path, net)  # all-or-nothing for the network itself
    if ema is not None:
        ema.shadow.load_state_dict(ema_state)
    for g, mine in (("adam_m", opt.m), ("adam_v", opt.v)):
        for name, a in mine.items():
            a[...] = xp.asarray(moments[g][name])
    history[:] = list(run["history"])
    opt.t = meta["adam_t"]
    return _State(**meta["state"]), xp.asarray(run["total"])


__all__ = ["Adam", "EMA", "TrainConfig", "TrainResult", "TrainingDiverged", "TRAIN_STREAMS", "train",
           "trainable_part", "init_generator", "TRAINABLE"]
