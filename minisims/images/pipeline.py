"""SIMS on images, step by step (paper Section 4.1, Figure 3), with everything on disk.

# N images, C channels (3), H W resolution, B aux budgets, W guidance values
Each step is Algorithm 1's step from :mod:`minisims.sims`, given the preset's recipe; this module
adds the files between them, so a step can run alone, be interrupted and resumed, or be reused:

    outdir/base.npz           step 1: the base model (raw weights, "ema" group, training state)
    outdir/synthetic.npz      step 2: S, n_s images (arr_0, uint8 NHWC) from the base's EMA
    outdir/aux_<B>.npz        step 3: the auxiliary model fine-tuned on S with budget B images
    outdir/samples/<name>/    step 4: samples.zip (a PNG per seed), samples.npz (arr_0, uint8 NHWC);
                              test_<name>/ the same at the test seeds
    outdir/ref_stats.npz      the real images' feature statistics (mu, sigma) for the FD
    outdir/results.json, fd_table.md, fd_heatmap.png, grid_<name>.png   the experiment's summary

Every file records what made it (minisims/images/provenance.py): the settings that determine it
and the digests of its inputs (the data's, the base's, S's). A step reuses or resumes a file only
when that record matches what it would write now, and otherwise names the file and the first
setting that differs.

Random numbers: the base trains on the keyed streams of ``seed`` (resumable bit for bit), the aux
of budget B on those of a seed derived from (seed, B), S uses the seeds from
:data:`minisims.sims.SYNTH_SEEDS_FROM` on, and evaluation images use EDM's per-image seeds
(``--seeds 0-999``: image i depends on its seed alone). Every w of one budget is sampled with the
same seeds, so the columns differ by the guidance only. The experiment chooses its (B, w) on the
validation seeds 0..n_eval-1 and reports it on the test seeds n_eval..2 n_eval-1.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import numpy as np

from . import provenance
from .. import backend, ops
from ..atomic import atomic_write, write_json
from ..checkpoint import checkpoint_groups, load_checkpoint
from ..data.cifar10 import load_images
from ..data.images import to_model, to_uint8
from ..diffusion import EDM, EDMPrecond, VPPrecond
from ..guidance import GuidanceInterval
from ..nn.unet import UNet
from ..sims import SIMSRecipe, SYNTH_SEEDS_FROM, synthesize, train_aux, train_base
from ..streams import derive_seed
from ..train import TrainConfig
from .presets import ImagePreset


class PipelineError(ValueError):
    """A step cannot run as asked (a missing or mismatched file); the message says what to do."""


# ---------------------------------------------------------------- the recipe and the data

def make_recipe(p: ImagePreset, aux_images: int | None = None) -> SIMSRecipe:
    """Algorithm 1's recipe for preset ``p``, the aux fine-tuned for ``aux_images`` images."""
    precond = {"edm": EDMPrecond(p.sigma_data), "vp": VPPrecond()}[p.formulation]
    form = EDM(precond=precond, num_steps=p.num_steps, member_ndim=0, data_ndim=3)
    cfg = p.unet_config()
    interval = None if p.interval is None else GuidanceInterval(sigma_lo=p.interval[0],
                                                                sigma_hi=p.interval[1])
    return SIMSRecipe(
        make_model=lambda data, rng: UNet(cfg, rng), formulation=form,
        base=TrainConfig(lr=p.lr, batch_size=p.batch, images=p.base_images,
                         warmup_images=p.warmup_images, ema_half_life_images=p.ema_half_life_images,
                         hflip=p.hflip, checkpoint_every_images=p.checkpoint_every_images),
        aux=TrainConfig(lr=p.aux_lr, batch_size=p.batch,
                        images=p.aux_budgets[0] if aux_images is None else aux_images,
                        trainable=p.aux_trainable, hflip=p.hflip,
                        checkpoint_every_images=p.checkpoint_every_images),
        n_synth=p.n_synth, interval=interval, sample_batch=p.sample_batch)


def downsample(images, resolution: int):
    """Average k x k blocks of uint8 NHWC images down to ``resolution`` (k = H / resolution)."""
    N, H, W, C = images.shape
    if H == resolution and W == resolution:
        return images
    if H != W or H % resolution:
        raise PipelineError(f"images of {H}x{W} cannot be averaged down to {resolution}x{resolution}")
    k = H // resolution
    blocks = images.reshape(N, resolution, k, resolution, k, C).astype(np.float64)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)  # N,res,res,C


def real_images(p: ImagePreset, data, md5):
    """The preset's real training images, uint8 NHWC at its resolution, where they came from, and
    their digest (read once per process and source)."""
    key = (str(data), md5, p.n_train, p.resolution)
    if key not in _REAL:
        s = load_images(data, split="train", md5=md5, limit=p.n_train)
        images = downsample(s.images, p.resolution)
        _REAL.clear()  # one data set held at a time
        _REAL[key] = images, s.source, provenance.data_digest(images)
    return _REAL[key]


_REAL = {}


# ---------------------------------------------------------------- checkpoints of the networks

def _meta(p: ImagePreset, **more) -> dict:
    return {"preset": p.name, "resolution": p.resolution, "unet": asdict(p.unet_config()),
            "formulation": p.formulation, **more}


def load_model(path: str, p: ImagePreset, group: str | None = None) -> UNet:
    """A network saved by a step, checked to be finished and the preset's size first (one-line
    error if not)."""
    groups = check_model(path, p)
    net = UNet(p.unet_config(), np.random.default_rng(0))  # on the current device
    load_checkpoint(path, net, group=group if group in groups else None)
    return net


def check_model(path: str, p: ImagePreset, finished: bool = True) -> set:
    """PipelineError unless ``path`` holds a network of preset ``p``'s size and formulation (and,
    with ``finished``, of a completed run); returns its checkpoint's extra groups."""
    if not os.path.exists(path):
        raise PipelineError(f"{path} does not exist: run the step that writes it first")
    groups, meta = checkpoint_groups(path)
    if finished and not meta.get("finished"):  # never sample from (or fine-tune) a half-trained model
        step = {"base": "train", "aux": "aux"}.get(meta.get("step"), "step that wrote it")
        raise PipelineError(f"{path} is an interrupted training run: finish it first (the "
                            f"{step} step with --resume), or remove it to start over")
    want = asdict(p.unet_config())
    if meta.get("unet") != json.loads(json.dumps(want)):
        raise PipelineError(f"{path} holds another network (preset {meta.get('preset')!r}, "
                            f"resolution {meta.get('resolution')}) than preset {p.name!r}: use the "
                            "preset it was trained with, or another --outdir")
    if meta.get("formulation", p.formulation) != p.formulation:
        raise PipelineError(f"{path} was trained with the {meta['formulation']} formulation, not "
                            f"{p.formulation}: pass --formulation {meta['formulation']}")
    return groups


def _finished(path: str) -> bool:
    """Whether the training checkpoint at ``path`` is of a completed run."""
    if not os.path.exists(path):
        return False
    return bool(checkpoint_groups(path)[1].get("finished"))  # set by the loop's final save


# ---------------------------------------------------------------- the four steps

def _check_unfinished(path: str, resume: bool):
    """An unfinished run's checkpoint is continued with resume, and never silently overwritten."""
    if os.path.exists(path) and not _finished(path) and not resume:
        raise PipelineError(f"{path} is an interrupted run: pass --resume to continue it, or "
                            "remove the file to start over")


def step_train(p: ImagePreset, data, outdir: str, seed: int = 0, md5=None, resume: bool = False,
               progress: bool = True, log=print) -> UNet:
    """Step 1: the base model, trained (or resumed, or reused when finished) into base.npz.
    Returns the base's EMA weights (or its weights, without an EMA)."""
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "base.npz")
    images, source, data_digest = real_images(p, data, md5)
    rec = provenance.base_record(p, seed, data_digest)
    if os.path.exists(path):  # reused or resumed only if this run would make it
        check_model(path, p, finished=False)
        provenance.check(path, rec)
    if not _finished(path):
        _check_unfinished(path, resume)
        log(f"base: {len(images)} real images ({source}) at {p.resolution}x{p.resolution}, "
            f"{p.base_images:,} images seen, batch {p.batch}")
        x = backend.asarray(to_model(images))  # N,C,H,W
        t0 = time.perf_counter()
        with ops.network_threads(x):  # BLAS on one thread beside the convolutions' own
            train_base(x, make_recipe(p), seed, progress=progress, checkpoint=path, resume=resume,
                       meta=_meta(p, step="base", seed=seed, provenance=rec))
        log(f"base trained in {time.perf_counter() - t0:.0f} s -> {path}")
    else:
        log(f"base: reusing {path}")
    return load_model(path, p, group="ema")


def step_synth(p: ImagePreset, outdir: str, progress: bool = True, log=print):
    """Step 2: n_s images from the base (EMA) model into synthetic.npz (uint8 NHWC)."""
    from ..exports import write_npz
    path = os.path.join(outdir, "synthetic.npz")
    base_path = os.path.join(outdir, "base.npz")
    base = load_model(base_path, p, group="ema")
    rec = provenance.synth_record(p, provenance.digest(base_path))
    if os.path.exists(path):
        provenance.check(path, rec)
        S = _read_npz(path)
        if S.shape[1:3] != (p.resolution, p.resolution):
            raise PipelineError(f"{path} holds {S.shape[1]}x{S.shape[2]} images, preset {p.name!r} "
                                f"makes {p.resolution}x{p.resolution}: use its preset or another --outdir")
        log(f"S: reusing {path}")
        return S
    t0 = time.perf_counter()
    seeds = range(SYNTH_SEEDS_FROM, SYNTH_SEEDS_FROM + p.n_synth)
    with ops.network_threads():
        S = synthesize(base, make_recipe(p), p.n_synth, seeds, progress=progress)
    S = to_uint8(backend.to_numpy(S))
    write_npz(S, path, provenance=rec)
    log(f"S: {p.n_synth} images in {time.perf_counter() - t0:.0f} s -> {path}")
    return S


def _read_npz(path):
    """uint8 NHWC images of an .npz the pipeline wrote (a damaged file is a one-line DataError)."""
    return load_images(path, md5=None).images


def aux_path(outdir: str, budget: int) -> str:
    return os.path.join(outdir, f"aux_{budget}.npz")


def step_aux(p: ImagePreset, outdir: str, budget: int, seed: int = 0, resume: bool = False,
             progress: bool = True, log=print) -> UNet:
    """Step 3: a copy of the base fine-tuned on S alone for ``budget`` images into aux_<B>.npz."""
    path = aux_path(outdir, budget)
    base_path, s_path = os.path.join(outdir, "base.npz"), os.path.join(outdir, "synthetic.npz")
    for needed, step in ((base_path, "train"), (s_path, "synth")):
        if not os.path.exists(needed):
            raise PipelineError(f"{needed} does not exist: run the {step} step first")
    aux_seed = derive_seed(seed, 2, budget)
    if os.path.exists(path):
        check_model(path, p, finished=False)
    check_model(base_path, p)
    rec = provenance.aux_record(p, budget, aux_seed, provenance.digest(base_path),
                                provenance.digest(s_path))
    if os.path.exists(path):
        provenance.check(path, rec)
    if not _finished(path):
        _check_unfinished(path, resume)
        base = load_model(base_path, p, group="ema")
        S = backend.asarray(to_model(_read_npz(s_path)))  # n_s,C,H,W
        t0 = time.perf_counter()
        with ops.network_threads(S):
            train_aux(base, S, make_recipe(p, budget), aux_seed, progress=progress, checkpoint=path,
                      resume=resume, meta=_meta(p, step="aux", budget=budget, seed=seed, provenance=rec))
        log(f"aux B={budget:,}: fine-tuned ({p.aux_trainable}) in {time.perf_counter() - t0:.0f} s -> {path}")
    model = load_model(path, p)
    if p.aux_trainable == "decoder":
        model.train_encoder = False
    return model


def sample_images(p: ImagePreset, base, aux, w: float, seeds, progress: bool = False):
    """Step 4: one image per seed from (1 + w) D_base - w D_aux, uint8 NHWC (Algorithm 1's
    sampling step; a decoder-only aux shares the base's encoder pass there)."""
    seeds = list(seeds)
    with ops.network_threads():
        x = synthesize(base, make_recipe(p), len(seeds), seeds, aux=aux, w=w, progress=progress)
    return to_uint8(backend.to_numpy(x))


def write_samples(images, seeds, folder: str, pngs: bool = True, record: dict | None = None):
    """samples.zip (one PNG per seed: EDM's fid.py reads it), samples.npz (arr_0: the ADM
    evaluator's format) and, if ``pngs``, the PNGs themselves in ``folder``; with ``record`` (what
    made them) provenance.json beside them and in samples.npz."""
    from ..exports import write_npz, write_png_zip, write_pngs
    os.makedirs(folder, exist_ok=True)
    if pngs:
        write_pngs(images, list(seeds), folder)
    write_png_zip(images, list(seeds), os.path.join(folder, "samples.zip"))
    write_npz(images, os.path.join(folder, "samples.npz"), provenance=record)
    if record is not None:
        write_json(os.path.join(folder, "provenance.json"), record)


def sample_name(budget, w) -> str:
    """The folder name of a sample set: base, aux_B<B> or sims_B<B>_w<w>."""
    if w == 0 or budget is None:
        return "base"
    return f"aux_B{budget}" if w == -1 else f"sims_B{budget}_w{w:g}"


def w_label(w: float) -> str:
    return {0.0: "0 (base)", -1.0: "-1 (aux)"}.get(float(w), f"{w:g}")


# ---------------------------------------------------------------- the whole experiment

def reference_stats(p: ImagePreset, data, outdir: str, features: str, md5=None, log=print):
    """The real images' feature statistics, computed once into ref_stats_<features>.npz."""
    from ..features import image_stats
    from ..metrics import load_stats, save_stats
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, f"ref_stats_{features}.npz")
    images, source, data_digest = real_images(p, data, md5)
    rec = provenance.stats_record(p, features, data_digest)
    if os.path.exists(path):
        stats = load_stats(path)  # a damaged file: one line, before its record is read
        provenance.check(path, rec)
        return stats
    mu, sigma = image_stats(images, features)
    save_stats(path, mu, sigma, provenance=rec)
    log(f"reference statistics of {len(images)} real images ({source}) -> {path}")
    return mu, sigma


BOOTSTRAP_REPS = 100  # resamples behind each standard error (its own relative error about 7%)
BOOTSTRAP_KEY = 0xB0075  # the bootstrap's stream: rng([training seed, BOOTSTRAP_KEY])


def run_sims(p: ImagePreset, data, outdir: str, seed: int = 0, features: str | None = None,
             md5=None, pngs: bool = False, progress: bool = True, log=print,
             resume: bool = False, reps: int = BOOTSTRAP_REPS) -> dict:
    """Algorithm 1 and Figure 3 for preset ``p``, with the cell chosen on one seed set and
    reported on another.

    Validation: the base and every (aux budget B, w) cell are sampled at seeds 0..n_eval-1, each
    cell's FD with its paired bootstrap standard error against the base. The cell with the lowest
    validation FD among w > 0 is the choice. Test: the base and the chosen cell are sampled again
    at seeds n_eval..2 n_eval-1 and their FDs, and the gain with its paired standard error, are
    what the run reports. Writes results.json, fd_table.md, fd_heatmap.png and image grids;
    reuses any sample set already in the folder whose record matches. Returns the results dict.
    """
    from ..exports import image_grid
    from ..features import DEFAULT_FEATURES, fd_label, get_extractor
    from ..metrics import fd_bootstrap, fd_from_stats, feature_stats
    from ..plots import fd_heatmap
    features = features or DEFAULT_FEATURES
    label = fd_label(features)
    t_start, seconds = time.perf_counter(), {}

    def timed(name, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
        return out

    ref = timed("reference statistics", reference_stats, p, data, outdir, features, md5, log)
    log(f"preset {p.name}: {p.measured}")
    base = timed("train base", step_train, p, data, outdir, seed, md5, resume, progress, log)
    timed("synthesize S", step_synth, p, outdir, progress, log)
    made = {name: provenance.digest(os.path.join(outdir, f)) for name, f in
            (("reference statistics", f"ref_stats_{features}.npz"), ("base", "base.npz"),
             ("S", "synthetic.npz"))}
    made["data"] = real_images(p, data, md5)[2]
    val, test = range(p.n_eval), range(p.n_eval, 2 * p.n_eval)
    extract = get_extractor(features)

    def sample(name, aux, w, s, aux_digest=None, grid=True):
        """The features (n_eval,D) of one sample set, sampled now or read back."""
        record = provenance.samples_record(p, w, s, made["base"], aux_digest)
        folder = os.path.join(outdir, "samples", name)
        images = reuse_samples(folder, record, pngs)
        if images is None:
            images = timed("sampling", sample_images, p, base, aux, w, s, progress)
            write_samples(images, s, folder, pngs, record)
        if grid:
            image_grid(images[:64], os.path.join(outdir, f"grid_{name}.png"))
        return timed("features", extract, images)

    def fd_of(f):
        return float(fd_from_stats(*feature_stats(f), *ref))

    feats = {(None, 0.0): sample("base", None, 0.0, val)}
    base_fd = fd_of(feats[None, 0.0])
    log(f"base: {label} {base_fd:.3f} (validation seeds {val[0]}-{val[-1]})")
    fd = {b: {0.0: base_fd} for b in p.aux_budgets}
    auxes = {}
    for budget in p.aux_budgets:
        auxes[budget] = timed("fine-tune aux", step_aux, p, outdir, budget, seed, resume, progress, log)
        made[f"aux_{budget}"] = provenance.digest(aux_path(outdir, budget))
        for w in p.omegas:
            if w != 0:
                feats[budget, w] = sample(sample_name(budget, w), auxes[budget], w, val,
                                          made[f"aux_{budget}"])
                fd[budget][w] = fd_of(feats[budget, w])
                log(f"  B={budget:,} w={w:g}: {label} {fd[budget][w]:.3f}")
    cells = [(b, w) for b in p.aux_budgets for w in p.omegas if w != 0]
    rng = np.random.default_rng([seed, BOOTSTRAP_KEY])
    boot = timed("bootstrap", fd_bootstrap, [feats[None, 0.0]] + [feats[c] for c in cells], *ref,
                 rng, reps)  # reps,1+cells
    paired_se = {b: {0.0: 0.0} for b in p.aux_budgets}
    for k, (b, w) in enumerate(cells, start=1):
        paired_se[b][w] = float(np.std(boot[:, k] - boot[:, 0], ddof=1))
    validation = {"seeds": [val[0], val[-1]], "base_fd": base_fd,
                  "base_se": float(np.std(boot[:, 0], ddof=1)),
                  "fd": _str_keys(fd), "paired_se": _str_keys(paired_se)}
    guided = [c for c in cells if c[1] > 0]
    chosen = min(guided, key=lambda c: fd[c[0]][c[1]]) if guided else None
    tested = {"seeds": [test[0], test[-1]], "chosen": None}
    t_base = sample("test_base", None, 0.0, test, grid=False)
    if chosen is not None:
        b, w = chosen
        t_sims = sample("test_" + sample_name(b, w), auxes[b], w, test, made[f"aux_{b}"], grid=False)
        tb = timed("bootstrap", fd_bootstrap, [t_base, t_sims], *ref, rng, reps)  # reps,2
        tested.update(chosen={"budget": b, "w": w}, sims_fd=fd_of(t_sims),
                      sims_se=float(np.std(tb[:, 1], ddof=1)),
                      gain_se=float(np.std(tb[:, 0] - tb[:, 1], ddof=1)))
    else:
        tb = timed("bootstrap", fd_bootstrap, [t_base], *ref, rng, reps)
    tested.update(base_fd=fd_of(t_base), base_se=float(np.std(tb[:, 0], ddof=1)))
    if chosen is not None:
        tested["gain"] = tested["base_fd"] - tested["sims_fd"]
    first_order = {str(b): _first_order(feats[None, 0.0], feats[b, -1.0], ref, p.omegas)
                   for b in p.aux_budgets if (b, -1.0) in feats}
    seconds["total"] = time.perf_counter() - t_start
    results = {"preset": asdict(p), "features": features, "label": label,
               "device": backend.current_device(), "seed": seed, "base_fd": base_fd,
               "fd": validation["fd"], "validation": validation, "test": tested,
               "first_order": first_order, "bootstrap_reps": reps, "seconds": seconds,
               "inputs": made, "versions": provenance.versions(),
               "command": provenance.record("sims", {}, {})["command"]}
    write_json(os.path.join(outdir, "results.json"), results)
    table = fd_table(p, results)
    with atomic_write(os.path.join(outdir, "fd_table.md"), "w") as f:
        f.write(table + "\n")
    fd_heatmap(np.array([[fd[b][w] for w in p.omegas] for b in p.aux_budgets]), list(p.aux_budgets),
               list(p.omegas), os.path.join(outdir, "fd_heatmap.png"), base_fd=base_fd, label=label,
               title=f"SIMS on {p.resolution}x{p.resolution} images, preset {p.name}, training seed "
                     f"{seed}, on the validation seeds")
    log(table)
    return results


def _str_keys(grid: dict) -> dict:
    return {str(b): {str(float(w)): v for w, v in row.items()} for b, row in grid.items()}


def reuse_samples(folder: str, record: dict, pngs: bool = False):
    """The images (uint8 NHWC) of a sample set already in ``folder`` whose record is ``record``
    (None where there is none yet; a ProvenanceError naming the file where it differs)."""
    path = os.path.join(folder, "samples.npz")
    if not os.path.exists(path):
        return None
    provenance.check(path, record)
    images = _read_npz(path)
    if pngs:  # asked for now, perhaps not when the set was made
        from ..exports import write_pngs
        seeds = range(record["settings"]["seeds"][0], record["settings"]["seeds"][1] + 1)
        write_pngs(images, list(seeds), folder)
    return images


def _first_order(base_feats, aux_feats, ref, omegas) -> dict:
    """The toy's first-order argument (docs/when_sims_helps.md) in feature space: the base's
    error Delta = (mu_b - mu_r, Sigma_b - Sigma_r), what fine-tuning adds Delta' = (mu_a - mu_b,
    Sigma_a - Sigma_b), their cosine, w* = <Delta, Delta'> / <Delta', Delta'>, and the FD that
    SIMS at w would have if its features moved to first order: (mu_b - w dmu, Sigma_b - w dSigma),
    the covariance's negative eigenvalues clipped to 0."""
    from ..metrics import fd_from_stats, feature_stats
    mu_r, S_r = ref
    mu_b, S_b = feature_stats(base_feats)
    mu_a, S_a = feature_stats(aux_feats)
    delta = np.concatenate([mu_b - mu_r, (S_b - S_r).ravel()])  # D + D*D
    delta_aux = np.concatenate([mu_a - mu_b, (S_a - S_b).ravel()])  # D + D*D
    norm = float(np.linalg.norm(delta) * np.linalg.norm(delta_aux))
    predicted = {}
    for w in sorted({float(w) for w in omegas} | {0.0}):  # w = 0, the base, is what a change is from
        S = S_b - w * (S_a - S_b)  # D,D
        ev, V = np.linalg.eigh((S + S.T) / 2)
        S = (V * np.clip(ev, 0, None)) @ V.T
        predicted[str(float(w))] = float(fd_from_stats(mu_b - w * (mu_a - mu_b), S, mu_r, S_r))
    return {"cos": float(delta @ delta_aux) / norm if norm > 0 else 0.0,
            "w_star": float(delta @ delta_aux / (delta_aux @ delta_aux)) if norm > 0 else 0.0,
            "predicted_fd": predicted}


def fd_table(p: ImagePreset, r: dict) -> str:
    """The run's results as markdown: FD by budget (rows) and w (columns) on the validation
    seeds, each cell with its paired standard error against the base, then the chosen cell on the
    test seeds and the verdict."""
    v, t, label = r["validation"], r["test"], r["label"]
    lines = grid_header(p.omegas)
    for b in p.aux_budgets:
        fd, se = v["fd"][str(b)], v["paired_se"][str(b)]
        lines.append(f"| {b:,} | " + " | ".join(
            f"{fd[str(float(w))]:.3f}" + ("" if w == 0 else f" ± {se[str(float(w))]:.3f}")
            for w in p.omegas) + " |")
    lines += ["", f"Validation seeds {v['seeds'][0]}-{v['seeds'][1]}: {label} of the base "
              f"{v['base_fd']:.3f} (bootstrap standard error {v['base_se']:.3f}); ± is each cell's "
              f"paired bootstrap standard error against the base ({r['bootstrap_reps']} resamples "
              "of the seeds)."]
    if t["chosen"] is None:
        lines.append(f"Test seeds {t['seeds'][0]}-{t['seeds'][1]}: base {t['base_fd']:.3f} "
                     f"± {t['base_se']:.3f}; no w > 0 was run, so there is no SIMS cell to test.")
        return "\n".join(lines)
    b, w = t["chosen"]["budget"], t["chosen"]["w"]
    lines.append(f"Chosen on the validation seeds (lowest {label} with w > 0): B = {b:,}, w = {w:g}. "
                 f"On the test seeds {t['seeds'][0]}-{t['seeds'][1]}: base {t['base_fd']:.3f} ± "
                 f"{t['base_se']:.3f}, SIMS {t['sims_fd']:.3f} ± {t['sims_se']:.3f}, gain "
                 f"{t['gain']:+.3f} ± {t['gain_se']:.3f} (paired): {verdict(t)}.")
    return "\n".join(lines)


def grid_header(omegas) -> list[str]:
    """The two header lines of a table with a row per aux budget and a column per w."""
    return ["| aux budget B (images) | " + " | ".join(f"w = {w_label(w)}" for w in omegas) + " |",
            "|" + "---:|" * (len(omegas) + 1)]


def verdict(t: dict) -> str:
    """What a test-seed gain says against its paired standard error."""
    if t["gain"] > 2 * t["gain_se"]:
        return "SIMS beats the base by more than twice the sampling noise"
    if t["gain"] > 0:
        return "SIMS is better than the base, by less than twice the sampling noise"
    return "SIMS does not beat the base"
