"""``python -m minisims.images``: SIMS on images (CIFAR-10), the whole experiment or one step.

SIMS trains a base diffusion model on real images, samples a synthetic set S from it, fine-tunes a
copy on S alone (the auxiliary model, budget B in images seen) and samples with
(1 + w) D_base - w D_aux. The `sims` command does all of it and measures a Frechet distance (FD)
by (B, w), like the paper's Figure 3; the other commands are its steps, for running one at a time.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import backend
from ..cli_util import (MAX_SEED, MAX_THREADS, Parser, fail, float_list, int_at_least,
                        int_list_at_least, override, prepare_run, run_command)
from .presets import PRESETS

MAX_IMAGES = 10 ** 7  # images held in memory at once (a data set, S, an evaluation set)

EXAMPLES = """examples:
  python -m minisims.images sims --data ~/data/cifar-10-python.tar.gz --preset tiny --outdir runs/img
  python -m minisims.images sims --preset cpu --outdir runs/cifar16     # data from $MINISIMS_DATA
  python -m minisims.images train --data PATH --preset cpu --outdir runs/cifar16   # Ctrl-C, then
  python -m minisims.images train --data PATH --preset cpu --outdir runs/cifar16 --resume
  python -m minisims.images synth --preset cpu --outdir runs/cifar16
  python -m minisims.images aux --preset cpu --outdir runs/cifar16 --budget 4000
  python -m minisims.images sample --preset cpu --outdir runs/cifar16 --budget 4000 --w 1 --seeds 0-99
  python -m minisims.images fd --data PATH --preset cpu --outdir runs/cifar16 --images runs/cifar16/samples/base
  python -m minisims.images sims --data PATH --preset cpu --outdir runs/seeds --train-seeds 0,1,2
  python -m minisims.images study --data PATH --preset cpu --outdir runs/study --train-seeds 0,1,2

Every run chooses its (B, w) on the validation seeds (0..n_eval-1) and reports that cell against
the base on the test seeds (n_eval..2 n_eval-1), with bootstrap standard errors; --train-seeds
repeats it per training seed, because the training seed moves the FD more than the sampling does.

data (--data, or the folder named by $MINISIMS_DATA): the official cifar-10-python.tar.gz (its MD5
is checked), its extracted folder cifar-10-batches-py, a folder of PNGs, or an .npz whose arr_0 is
uint8 NHWC. Nothing is downloaded.

presets: tiny (seconds, for tests), cpu (16x16 images, a small UNet, about 6 min per training
seed on 2 cores), gpu (32x32, sized for ~10 min on one H100; unmeasured), cifar (EDM's full CIFAR-10
recipe; unmeasured). Flags such as --base-images override a preset's value.

The FD uses features that need no download (default randconv) and is labelled FD_<features>,
never FID; --features inception gives real FID where torch, pytorch-fid and its cached weights
are present.
"""


def build_parser() -> Parser:
    p = Parser(prog="python -m minisims.images", description=__doc__.split("\n\n")[0] + "\n\n" +
               __doc__.split("\n\n")[1], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=Parser)
    helps = {"sims": "the whole experiment: train (or reuse) the base, S, the aux at each budget, "
                     "samples at each (B, w) on validation seeds, the best cell and the base again on "
                     "test seeds, FD table, heatmap, grids, results.json",
             "train": "step 1: train the base model (resumes an interrupted run)",
             "synth": "step 2: sample the synthetic set S from the base",
             "aux": "step 3: fine-tune the auxiliary model on S for one budget",
             "sample": "step 4: sample (1 + w) D_base - w D_aux: PNGs per seed, samples.zip, samples.npz",
             "fd": "FD between a sample set (folder of PNGs or .npz) and the real images",
             "study": "when SIMS helps: the whole experiment at several base budgets and training "
                      "seeds, a summary per budget, study.md and study_heatmap.png"}
    cmds = {}
    for name, text in helps.items():
        c = sub.add_parser(name, help=text, description=text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--preset", choices=list(PRESETS), default="tiny",
                       help="sizes of everything (default: tiny)")
        c.add_argument("--outdir", default="runs/images", help="where every file goes (default: runs/images)")
        c.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (NumPy) or gpu (CuPy) (default: cpu)")
        c.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=None, help="training seed (default: 0)")
        c.add_argument("--blas-threads", type=int_at_least(0, MAX_THREADS), default=0,
                       help="BLAS threads; 0 leaves the library default, all cores (default: 0). "
                            "The CPU convolutions run their own NUMBA_NUM_THREADS threads")
        c.add_argument("--quiet", action="store_true", help="no progress bars")
        cmds[name] = c
    for name in ("sims", "train", "fd", "study"):
        cmds[name].add_argument("--data", default=None, help="the real images (see below; default: $MINISIMS_DATA)")
        cmds[name].add_argument("--data-md5", default="official", metavar="HEX|none",
                                help="expected MD5 of a .tar.gz archive: official (CIFAR-10's), a hex "
                                     "digest, or none to skip the check (default: official)")
    for name in ("sims", "train", "aux", "study"):
        cmds[name].add_argument("--resume", action="store_true",
                                help="continue an interrupted training run from its checkpoint "
                                     "(bit for bit the run it would have been)")
    for name in helps:
        cmds[name].add_argument("--formulation", choices=["edm", "vp"],
                                help="EDM preconditioning, or VP (the paper's CIFAR-10 base) (default: the preset's)")
    for name in ("sims", "sample", "study"):
        cmds[name].add_argument("--interval", type=float_list, metavar="LO,HI",
                                help="guide only where LO <= sigma <= HI, 0 <= LO < HI (default: everywhere)")
    for name in ("sims", "train"):
        cmds[name].add_argument("--base-images", type=int_at_least(1), help="the base's budget in images seen")
        cmds[name].add_argument("--n-train", type=int_at_least(1, MAX_IMAGES), help="real images to train on")
    for name in ("sims", "synth", "study"):
        cmds[name].add_argument("--n-synth", type=int_at_least(1, MAX_IMAGES), help="n_s = |S|")
    for name in ("sims", "study"):
        c = cmds[name]
        c.add_argument("--aux-budgets", type=int_list_at_least(1),
                       help="aux budgets B, images seen, e.g. 4000,12000")
        c.add_argument("--omegas", type=float_list, help="guidance weights w, e.g. -1,0,0.5,1,2")
        c.add_argument("--n-eval", type=int_at_least(2, MAX_IMAGES),
                       help="images per (B, w) for the FD, at the validation seeds 0..n-1 and again "
                            "at the test seeds n..2n-1")
        c.add_argument("--pngs", action="store_true", help="also write one PNG per sample (samples.zip and samples.npz always)")
        c.add_argument("--train-seeds", type=int_list_at_least(0, MAX_SEED), metavar="S[,S...]",
                       help="run the experiment once per training seed, each in OUTDIR/seed_<s>, and "
                            "write summary.md: FD by (B, w) as mean and spread over the seeds"
                            if name == "sims" else "training seeds, each base budget's in "
                            "OUTDIR/base_<N>/seed_<s> (default: 0,1)")
    cmds["study"].add_argument("--base-budgets", type=int_list_at_least(1), default=[10_000, 40_000, 160_000],
                               metavar="N[,N...]", help="the base's budgets in images seen, each in "
                               "OUTDIR/base_<N> (default: 10000,40000,160000)")
    for name in ("sims", "fd", "study"):
        cmds[name].add_argument("--features", default=None,
                                help="FD features: randconv (default, no download), pixels, or inception")
    for name in ("sims", "sample", "study"):
        cmds[name].add_argument("--num-steps", type=int_at_least(2, 10_000), help="Heun steps N (NFE 2N - 1)")
    cmds["aux"].add_argument("--budget", type=int_at_least(1), required=True, help="aux budget B, images seen")
    cmds["sample"].add_argument("--budget", type=int_at_least(1), help="which aux model (omit for the base)")
    cmds["sample"].add_argument("--w", type=float_list, default=[0.0], metavar="W[,W...]",
                                help="guidance weight(s); 0 is the base, -1 the aux (default: 0)")
    cmds["sample"].add_argument("--seeds", default=None, help="EDM's seed syntax, e.g. 0-999 or 1,5,9 (default: 0 to n_eval-1)")
    cmds["fd"].add_argument("--images", required=True, help="the samples: a folder of PNGs or an .npz (arr_0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"python -m minisims.images {args.command}"
    _check(prog, args)  # every value, before any work
    preset = override(PRESETS[args.preset], args)
    from .pipeline import make_recipe
    try:  # the training budgets (their step schedules must fit in memory), at once
        for budget in [args.budget] if getattr(args, "budget", None) else preset.aux_budgets:
            make_recipe(preset, budget)
    except ValueError as e:
        fail(prog, str(e), 2)
    _check_memory(prog, args, preset)
    outdir = prepare_run(prog, args)
    from ..folder_lock import FolderInUse, folder_lock
    try:
        with folder_lock(outdir, log=lambda line: print(line, file=sys.stderr)), \
                backend.blas_threads(args.blas_threads or None):
            return _dispatch(args, preset, outdir, prog)
    except FolderInUse as e:
        fail(prog, str(e), 1)


def _check(prog, args):
    """The values argparse cannot check alone; each failure is one line and status 2."""
    interval = getattr(args, "interval", None)
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] < interval[1]):
        fail(prog, f"--interval takes two noise levels LO,HI with 0 <= LO < HI, got "
                   f"{','.join(f'{v:g}' for v in interval)}", 2)
    if args.seed is not None and (getattr(args, "train_seeds", None) or args.command == "study"):
        fail(prog, "give --seed (one run) or --train-seeds (one run per seed), not both", 2)
    args.seed = 0 if args.seed is None else args.seed
    for flag in ("train_seeds", "base_budgets"):
        values = getattr(args, flag, None) or []
        if len(set(values)) != len(values):
            fail(prog, f"--{flag.replace('_', '-')} lists a value twice: {','.join(map(str, values))}", 2)
    if getattr(args, "seeds", None) is not None:
        from ..streams import parse_seeds
        try:
            args.seeds = parse_seeds(args.seeds)
        except ValueError as e:
            fail(prog, str(e), 2)


def _check_memory(prog, args, p):
    """The largest image set a command holds at once (S, the real images, a sample set: uint8,
    the model's float32 copy and the sampler's float64 state, 13 bytes a value), against this
    machine's memory, before any work."""
    from ..cli_util import physical_memory
    sizes = {"--n-synth": p.n_synth if args.command in ("sims", "synth", "aux", "study") else 0,
             "--n-train": (p.n_train or 50_000) if args.command in ("sims", "train", "fd", "study") else 0,
             "--n-eval": p.n_eval if args.command in ("sims", "study") else 0,
             "--seeds": len(args.seeds) if getattr(args, "seeds", None) is not None else 0}
    flag, n = max(sizes.items(), key=lambda kv: kv[1])
    need, have = n * 3 * p.resolution ** 2 * 13, physical_memory()
    if have is not None and need > 0.8 * have:
        fail(prog, f"{flag}: {n:,} images of {p.resolution}x{p.resolution} need about "
                   f"{need / 2**30:,.1f} GiB at once, more than this machine's {have / 2**30:.0f} GiB", 2)


def _md5(args):
    value = getattr(args, "data_md5", "official")
    if value == "official":
        from ..data.cifar10 import OFFICIAL_MD5
        return OFFICIAL_MD5
    return None if value.lower() == "none" else value.lower()


def _dispatch(args, p, outdir, prog) -> int:
    from . import pipeline, provenance
    from ..data.images import DataError
    from ..features import FeaturesUnavailable
    from ..train import TrainingDiverged
    progress = not args.quiet
    try:
        if args.command in ("sims", "study"):
            kw = dict(features=args.features, md5=_md5(args), pngs=args.pngs, progress=progress,
                      resume=args.resume)
            if args.command == "study":
                from .study import run_study
                run_study(p, args.data, outdir, args.base_budgets, args.train_seeds or [0, 1], **kw)
            elif args.train_seeds:
                from .study import run_seeds
                run_seeds(p, args.data, outdir, args.train_seeds, **kw)
            else:
                pipeline.run_sims(p, args.data, outdir, args.seed, **kw)
        elif args.command == "train":
            pipeline.step_train(p, args.data, outdir, args.seed, _md5(args), args.resume, progress)
        elif args.command == "synth":
            pipeline.step_synth(p, outdir, progress)
        elif args.command == "aux":
            pipeline.step_aux(p, outdir, args.budget, args.seed, args.resume, progress)
        elif args.command == "sample":
            seeds = args.seeds if args.seeds is not None else list(range(p.n_eval))
            if args.budget is None and any(w != 0 for w in args.w):
                fail(prog, "w != 0 needs an auxiliary model: give --budget B (run the aux step first)", 2)
            base_path = os.path.join(outdir, "base.npz")
            base = pipeline.load_model(base_path, p, group="ema")
            aux, aux_digest = None, None
            if args.budget is not None:
                path = pipeline.aux_path(outdir, args.budget)
                aux, aux_digest = pipeline.load_model(path, p), provenance.digest(path)
                aux.train_encoder = p.aux_trainable != "decoder"
            for w in args.w:
                images = pipeline.sample_images(p, base, aux, w, seeds, progress)
                folder = os.path.join(outdir, "samples", pipeline.sample_name(args.budget, w))
                pipeline.write_samples(images, seeds, folder, record=provenance.samples_record(
                    p, w, seeds, provenance.digest(base_path), aux_digest if w != 0 else None))
                print(f"{len(seeds)} images at w = {w:g} -> {folder}")
        elif args.command == "fd":
            from ..data.cifar10 import load_images
            from ..features import DEFAULT_FEATURES, fd_label, image_stats
            from ..metrics import fd_from_stats
            features = args.features or DEFAULT_FEATURES
            ref = pipeline.reference_stats(p, args.data, outdir, features, _md5(args))
            images = load_images(args.images, md5=None).images
            if images.shape[1:3] != (p.resolution, p.resolution):
                fail(prog, f"{args.images} holds {images.shape[1]}x{images.shape[2]} images; preset "
                           f"{p.name!r} measures {p.resolution}x{p.resolution}: pass its --preset", 1)
            print(f"{fd_label(features)} = {fd_from_stats(*image_stats(images, features), *ref):.4f} "
                  f"({len(images)} images of {args.images} against the real images)")
    except (DataError, pipeline.PipelineError, FeaturesUnavailable, TrainingDiverged, ValueError) as e:
        fail(prog, str(e).splitlines()[0] if str(e) else type(e).__name__, 1)
    return 0


def entry(argv=None):
    run_command(main, argv, "python -m minisims.images")
