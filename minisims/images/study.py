"""SIMS on images over training seeds, and over base budgets: how much of a gain is the seed's.

# S training seeds, N base budgets, B aux budgets, W guidance values
``python -m minisims.images sims --train-seeds 0,1,2`` runs the whole experiment once per training
seed, each in its own folder ``seed_<s>/`` (resumable: a finished file is reused), and
:func:`summarize` writes ``summary.md`` and ``summary.json``: the validation FD of every (B, w) as
mean and spread over the training seeds, the sampling noise beside it as bootstrap standard errors,
and each seed's chosen cell on its test seeds. ``python -m minisims.images study`` repeats that for
several base budgets, in ``base_<N>/``, and adds ``study.md``, ``study.json`` and
``study_heatmap.png``: where SIMS helps as the base trains longer, and whether the toy's
first-order argument (docs/when_sims_helps.md) predicts it.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..atomic import atomic_write, write_json
from .pipeline import grid_header, run_sims, verdict
from .presets import ImagePreset


def run_seeds(p: ImagePreset, data, outdir: str, seeds, log=print, **kw) -> dict:
    """``run_sims`` at each training seed into ``outdir/seed_<s>``, then the summary over them."""
    per_seed = [run_sims(p, data, os.path.join(outdir, f"seed_{s}"), s, log=log, **kw) for s in seeds]
    summary = summarize(p, per_seed)
    write_summary(outdir, p, summary)
    log(summary_table(p, summary))
    return summary


def summarize(p: ImagePreset, per_seed: list) -> dict:
    """Mean and spread over training seeds of each run's validation grid, and each run's test."""
    cells = [(b, w) for b in p.aux_budgets for w in p.omegas]

    def over_seeds(get):
        v = np.array([get(r) for r in per_seed])  # S
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None}

    grid = {f"{b}/{float(w)}": {
        **over_seeds(lambda r: r["validation"]["fd"][str(b)][str(float(w))]),
        "paired_se": float(np.mean([r["validation"]["paired_se"][str(b)][str(float(w))]
                                    for r in per_seed])),
        "below_base": sum(r["validation"]["fd"][str(b)][str(float(w))] < r["validation"]["base_fd"]
                          for r in per_seed)} for b, w in cells}
    tests = [{"seed": r["seed"], **r["test"]} for r in per_seed]
    tested = [t for t in tests if t["chosen"] is not None]
    gains = np.array([t["gain"] for t in tested])  # S
    return {"label": per_seed[0]["label"], "seeds": [r["seed"] for r in per_seed],
            "base_images": p.base_images,
            "base_validation": over_seeds(lambda r: r["validation"]["base_fd"]),
            "base_test": over_seeds(lambda r: r["test"]["base_fd"]),
            "base_se": float(np.mean([r["validation"]["base_se"] for r in per_seed])),
            "grid": grid, "tests": tests,
            "beats": int((gains > 0).sum()), "beats_2se": sum(t["gain"] > 2 * t["gain_se"] for t in tested),
            "tested": len(tested),
            "gain_mean": float(gains.mean()) if len(gains) else None,
            "gain_sd": float(gains.std(ddof=1)) if len(gains) > 1 else None,
            "first_order": [{"seed": r["seed"], "budget": int(b), **fo}
                            for r in per_seed for b, fo in r["first_order"].items()],
            "per_seed_fd": [{"seed": r["seed"], "fd": r["validation"]["fd"]} for r in per_seed]}


def _pm(x: dict, digits: int = 3) -> str:
    return f"{x['mean']:.{digits}f}" + ("" if x["sd"] is None else f" ± {x['sd']:.{digits}f}")


def summary_table(p: ImagePreset, s: dict) -> str:
    """The summary over training seeds as markdown."""
    n, label = len(s["seeds"]), s["label"]
    lines = [f"Validation {label} by (B, w), mean ± standard deviation over {n} training seeds "
             f"({', '.join(map(str, s['seeds']))}); base trained on {s['base_images']:,} images:", "",
             *grid_header(p.omegas)]
    for b in p.aux_budgets:
        lines.append(f"| {b:,} | " + " | ".join(_pm(s["grid"][f"{b}/{float(w)}"]) for w in p.omegas) + " |")
    lines += ["", "Sampling noise, as bootstrap standard errors over each run's validation seeds (mean over "
              f"training seeds): the base's FD {s['base_se']:.3f}; each cell against the base, paired, "
              "and in how many training seeds the cell is below the base:", "",
              *grid_header([w for w in p.omegas if w != 0])]
    for b in p.aux_budgets:
        lines.append(f"| {b:,} | " + " | ".join(
            f"{s['grid'][f'{b}/{float(w)}']['paired_se']:.3f} "
            f"({s['grid'][f'{b}/{float(w)}']['below_base']}/{n} below the base)"
            for w in p.omegas if w != 0) + " |")
    lines += ["", "Each training seed's cell, chosen on its validation seeds and measured on its test seeds:",
              "", "| training seed | chosen (B, w) | base | SIMS | gain ± paired SE | verdict |",
              "|---:|---|---:|---:|---:|---|"]
    for t in s["tests"]:
        if t["chosen"] is None:
            lines.append(f"| {t['seed']} | (none: no w > 0) | {t['base_fd']:.3f} | | | |")
            continue
        lines.append(f"| {t['seed']} | ({t['chosen']['budget']:,}, {t['chosen']['w']:g}) | "
                     f"{t['base_fd']:.3f} | {t['sims_fd']:.3f} | {t['gain']:+.3f} ± {t['gain_se']:.3f} | "
                     f"{verdict(t)} |")
    lines += ["", summary_line(s)]
    return "\n".join(lines)


def summary_line(s: dict) -> str:
    """One sentence: in how many training seeds SIMS at its chosen cell beats the base on the test
    seeds, by how much, against how far the base itself moves from seed to seed."""
    if not s["tested"]:
        return "No w > 0 was run: nothing to compare with the base."
    sd = lambda x: "n/a (one seed)" if x is None else f"{x:.3f}"  # noqa: E731
    return (f"On the test seeds, SIMS at the cell chosen on the validation seeds beats the base in "
            f"{s['beats']} of {s['tested']} training seeds ({s['beats_2se']} by more than twice the "
            f"paired sampling noise); mean gain {s['gain_mean']:+.3f} {s['label']}, standard deviation "
            f"{sd(s['gain_sd'])} over training seeds, against a base whose test FD is "
            f"{_pm(s['base_test'])} over training seeds.")


def write_summary(outdir: str, p: ImagePreset, s: dict) -> None:
    write_json(os.path.join(outdir, "summary.json"), {"preset": dataclasses.asdict(p), **s})
    with atomic_write(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(summary_table(p, s) + "\n")


# ---------------------------------------------------------------- over base budgets

def run_study(p: ImagePreset, data, outdir: str, base_budgets, seeds, log=print, **kw) -> dict:
    """The experiment at every (base budget, training seed), seed by seed (so that a study cut
    short has every budget at the first seeds), then one summary per budget and the study's."""
    presets = {n: dataclasses.replace(p, base_images=n) for n in base_budgets}
    results = {n: [] for n in base_budgets}
    for s in seeds:
        for n in base_budgets:
            log(f"== base budget {n:,}, training seed {s}")
            results[n].append(run_sims(presets[n], data, os.path.join(outdir, f"base_{n}", f"seed_{s}"),
                                       s, log=log, **kw))
    summaries = {}
    for n in base_budgets:
        summaries[n] = summarize(presets[n], results[n])
        write_summary(os.path.join(outdir, f"base_{n}"), presets[n], summaries[n])
    study = {"base_budgets": list(base_budgets), "seeds": list(seeds),
             "aux_budgets": list(p.aux_budgets), "omegas": list(p.omegas),
             "summaries": {str(n): summaries[n] for n in base_budgets},
             "first_order": first_order_check(summaries)}
    write_json(os.path.join(outdir, "study.json"), study)
    text = study_table(p, study)
    with atomic_write(os.path.join(outdir, "study.md"), "w") as f:
        f.write(text + "\n")
    from ..plots import study_heatmap
    study_heatmap(study_ratios(study), base_budgets, list(p.aux_budgets), list(p.omegas),
                  os.path.join(outdir, "study_heatmap.png"), label=summaries[base_budgets[0]]["label"])
    log(text)
    return study


def study_ratios(study: dict):
    """FD of each cell over the base's, per training seed: (N, S, B, W) for the heatmap."""
    out = []
    for n in study["base_budgets"]:
        s = study["summaries"][str(n)]
        out.append([[[m["fd"][str(b)][str(float(w))] / m["fd"][str(b)]["0.0"] for w in study["omegas"]]
                     for b in study["aux_budgets"]] for m in s["per_seed_fd"]])
    return np.array(out)  # N,S,B,W


def first_order_check(summaries: dict) -> dict:
    """Does the first-order prediction (each run's features moved by -w Delta') say on which side of
    the base every guided cell falls? Counted over every (base budget, seed, aux budget, w > 0)."""
    agree = total = 0
    pairs = []
    for n, s in summaries.items():
        for fo in s["first_order"]:
            fd = next(m["fd"] for m in s["per_seed_fd"] if m["seed"] == fo["seed"])[str(fo["budget"])]
            for w, pred in fo["predicted_fd"].items():
                if float(w) > 0:
                    measured = fd[w] - fd["0.0"]  # < 0: SIMS helps
                    predicted = pred - fo["predicted_fd"]["0.0"]
                    agree += (measured < 0) == (predicted < 0)
                    total += 1
                    pairs.append((predicted, measured))
    pairs = np.array(pairs)  # cells,2
    corr = float(np.corrcoef(pairs.T)[0, 1]) if len(pairs) > 2 else None
    return {"agree": int(agree), "cells": int(total), "correlation": corr}


def study_table(p: ImagePreset, st: dict) -> str:
    """The study as markdown: per base budget, the base's FD, the best cell on average, the test
    verdicts, and the first-order argument's record."""
    label = st["summaries"][str(st["base_budgets"][0])]["label"]
    n = len(st["seeds"])
    lines = [f"SIMS on {p.resolution}x{p.resolution} images by base budget, {n} training seeds "
             f"({', '.join(map(str, st['seeds']))}); {label} on the validation seeds unless said.", "",
             "| base budget (images) | base, validation | base, test | best cell on average (B, w) | its FD | "
             "cells below the base (of all seeds) | test: SIMS beats the base | mean test gain ± sd |",
             "|---:|---:|---:|---|---:|---:|---|---:|"]
    for nb in st["base_budgets"]:
        s = st["summaries"][str(nb)]
        guided = {k: v for k, v in s["grid"].items() if float(k.split("/")[1]) > 0}
        best = min(guided, key=lambda k: guided[k]["mean"])
        b, w = best.split("/")
        below = sum(v["below_base"] for v in guided.values())
        gain = ("n/a" if s["gain_mean"] is None else f"{s['gain_mean']:+.3f}" +
                ("" if s["gain_sd"] is None else f" ± {s['gain_sd']:.3f}"))
        lines.append(f"| {nb:,} | {_pm(s['base_validation'])} | {_pm(s['base_test'])} | "
                     f"({int(b):,}, {float(w):g}) | {_pm(guided[best])} | {below} of {len(guided) * n} | "
                     f"{s['beats']} of {s['tested']} ({s['beats_2se']} by > 2 SE) | {gain} |")
    check = st["first_order"]
    if not check["cells"]:
        lines += ["", "First order (docs/when_sims_helps.md): not checked, as no run sampled w = -1 "
                  "(the aux alone), whose move from the base it needs."]
        return "\n".join(lines)
    lines += ["", f"First order (docs/when_sims_helps.md, in feature space): moving the base's feature "
              f"mean and covariance by -w times the aux's move from the base predicts on which side of "
              f"the base a guided cell falls in {check['agree']} of {check['cells']} (base budget, seed, "
              f"B, w > 0) cells; predicted and measured changes of {label} correlate at "
              + ("n/a" if check["correlation"] is None else f"{check['correlation']:.2f}") + ".", "",
              "Each run's chosen cell against the first-order picture: cos(Delta, Delta') at the chosen "
              "B (the aux's move from the base, along the base's own error: near 1, SIMS can cancel "
              "it), w* = <Delta, Delta'> / <Delta', Delta'>, and the gain on the test seeds:", "",
              "| base budget | training seed | chosen (B, w) | cos at that B | w* | test gain ± paired SE |",
              "|---:|---:|---|---:|---:|---:|"]
    for nb in st["base_budgets"]:
        s = st["summaries"][str(nb)]
        for t in s["tests"]:
            if t["chosen"] is None:
                continue
            b = t["chosen"]["budget"]
            fo = next(x for x in s["first_order"] if x["seed"] == t["seed"] and x["budget"] == b)
            lines.append(f"| {nb:,} | {t['seed']} | ({b:,}, {t['chosen']['w']:g}) | {fo['cos']:.2f} | "
                         f"{fo['w_star']:.2f} | {t['gain']:+.3f} ± {t['gain_se']:.3f} |")
    return "\n".join(lines)
