"""The mutation score of the core and every mutant that lived, with why (docs/testing.md).

Run in the checkout after ``mutmut run`` (settings in setup.cfg's [mutmut]):

    python tests/mutation_report.py > docs/mutation-survivors.md

It reads ``mutmut results --all true`` and ``mutmut show`` for each mutant that survived or that no
selected test reaches, sorts each into a reason by the rules below (first match wins), and prints
the per-module score and the list. A rule is a claim about every mutant it takes, so each one
names what it matches narrowly; a mutant no rule takes is listed as "not explained", and counts
against the score like any other.
"""
import collections
import re
import subprocess
import sys

# Equivalent: the mutant computes the same values as the original on every input the code takes.
EQUIVALENT = [
    ("no visible change", r"^$", r"^$", "mutmut shows no changed line (a change inside a string "
     "or a comment's line)"),
    ("float64 either way",
     r"dtype=(np\.)?float64|np\.float64\)|, float\)",
     r"dtype=None|\(None\)|, None\)|, \)",
     "float64 in effect: the array is float64 already, NumPy's default (float64) gives it, or "
     "what it meets next (a float64 operand, SciPy's cdist) computes in float64"),
    ("the sampler's float64 state", r"astype\(x\.dtype, copy=False\)", r"astype\(None",
     "x is the sampler's float64 state, and astype(None) is float64"),
    ("astype's copy flag", r"copy=(False|True)", r"copy=(None|True|False)|astype\([^,()]*(\.\w+)?, \)",
     "only whether a new array is made changes, not its values"),
    ("einsum letters", r"einsum\(\"[a-z,>-]+\"", r"einsum\(\"[A-Z,>-]+\"",
     "the same contraction written with capital letters"),
    ("reshape(-2)", r"reshape\(.*-1\b", r"reshape\(.*-2\b",
     "NumPy (2.4) reads any negative size as 'the rest', as it reads -1"),
    ("an unused parameter",
     r"(_split\(y, |ddpm_noise\(y, rng, len\(alpha_bar\), |edm_noise\(y, rng, P_mean, P_std, )member_ndim"
     r"|member_ndim: int = 1",
     r"(_split\(y, |alpha_bar\), |P_std, )None|member_ndim: int = 2",
     "_split (and so ddpm_noise and edm_noise) never reads member_ndim"),
    ("an integer division that is exact", r"err\.size // max", r"err\.size / max",
     "err.size is a multiple of loss.size: the same count, as a float"),
    ("a probability-zero tie", r"< 0\.5", r"<= 0\.5", "a uniform draw equals 0.5 with probability 0"),
    ("cdist's metric name", r"\"sqeuclidean\"", r"\"SQEUCLIDEAN\"", "SciPy lower-cases the metric name"),
    ("a seed sequence's first words", r"generate_state\([12]\)", r"generate_state\([23]\)",
     "SeedSequence.generate_state(n + 1) starts with generate_state(n)'s words, and only those are read"),
    ("a scalar where an array broadcasts the same", r"xp\.ones_like\(sigma\) if hasattr",
     r"hasattr\(sigma, \"(XXshapeXX|SHAPE)\"\)|and False else 1\.0|hasattr\(None|or True else 1\.0",
     "c_skip = 1.0 broadcasts exactly as ones_like(sigma) does, and ones_like(0.5) is 1.0"),
    ("a weight no step reads", r"w = guidance\.w if guided else 0\.0", r"else 1\.0",
     "off the guidance interval no aux output exists, and the step ignores w"),
    ("np.load's default", r"allow_pickle=False", r"allow_pickle=None|np\.load\(path, \)",
     "allow_pickle is False by default"),
    ("a default never used", r"getattr\(data, \"files\", \(\)\)", r"\"files\", (None)?\)",
     "inside the with block np.load gave an NpzFile, which has .files (an .npy array fails at with)"),
    ("atomic_write's default", r"atomic_write\(path, \"wb\"\)", r"atomic_write\(path, \)",
     "atomic_write's mode defaults to \"wb\""),
    ("exp in place or not", r"out=S", r"out=None|exp\(S, \)", "the same values, in a new array"),
    ("the reference's cache tag", r"\(\"ref\",", r"\(\"(XXrefXX|REF)\",",
     "group_norm_backward tests the tag for \"fused\" only"),
    ("a larger padded buffer", r"H \+ 2 \* p, Wd \+ 2 \* p", r"3 \* p",
     "dx_pad is cropped to [p:p+H, p:p+W]: extra rows or columns at the end are dropped"),
    ("a parameter-free child's name", r"\"embed\": self\.embed", r"\"(XXembedXX|EMBED)\"",
     "the embedding has no parameters, so its name appears in no state dict"),
    ("any Linear layer", r"layers\[0\]\.ensemble", r"layers\[1\]\.ensemble",
     "every Linear layer of the net has the same ensemble"),
    ("a branch never taken", r"st\.batch if epoch == st\.epoch else 0", r".",
     "st.epoch equals epoch at the start of every epoch (it advances as an epoch ends; a resume "
     "sets it), so the else branch never runs"),
    ("a total that is reset first", r"checkpoint_every_images or 0\), 0\.0", r"\), 1\.0",
     "a fresh run resets total before its first step, and a resumed one loads it"),
    ("a total never read", r"history, 0\.0, \{", r"history, 1\.0, \{",
     "the final checkpoint is finished: resuming it runs no step, so its total is never read"),
    ("argsort's default axis", r"argsort\(.*axis=-1\)", r"argsort\(.*\), \)", "the default axis is -1"),
    ("the batches of a per-seed draw", r"step = n if r\.sample_batch is None|concatenate\(parts, axis=0\)",
     r"or True else r\.sample_batch|parts\[1\]|concatenate\(parts, \)",
     "each image depends on its own seed alone, so one batch or several give the same images, "
     "and every part has the same array module; concatenate's default axis is 0"),
    ("int64 already", r"xp\.full\(lead, -1, dtype=np\.int64\)", r"dtype=None|-1, \)",
     "full(..., -1) of a Python int is int64 by default"),
    ("a ceiling compared with a whole number", r"-\(-self\.images // self\.batch_size\) > MAX_STEPS",
     r"-\(-self\.images / self\.batch_size\)",
     "ceil(x) > M exactly when x > M, for the whole number M = MAX_STEPS"),
    ("int64 holds the run indices", r"asarray\(self\.runs, dtype=np\.uint64\)", r"dtype=None|runs, \)",
     "indices below 2^32 are exact in int64, and run_words casts them to uint64"),
]
# Reachable, and deliberately not pinned: said so, with why.
NOT_PINNED = [
    ("the speed shown after a resume", r"\(st\.seen - seen0\)", r"\(st\.seen \+ seen0\)",
     "the progress bar's images per second counts from the resume; seen0 is 0 in a fresh run, "
     "where a test pins the speed with a fake clock, and no test reads the bar of a resumed run"),
]
# Not equivalent, but out of a CPU test's reach.
UNREACHABLE = [
    ("a CuPy branch", r"heun_stage[12]\(|FusedMLPDenoiser\(|backend\.current_device\(\) == \"gpu\"|"
     r"else \"gpu\"|sampling_forward|make is None", r".",
     "runs only on a GPU (tests/gpu/ checks it there): only the GPU's FusedMLPDenoiser has a "
     "sampling_forward, and the device string is read only there"),
    ("the CPU's array module either way",
     r"backend\.xp\([^()]*\)|numpy: bool = False|xp = np if numpy|numpy=numpy",
     r"backend\.xp\(None\)|numpy: bool = True|\(numpy\) (and False|or True)|numpy=None|runs, \)",
     "on the CPU both give NumPy arrays; they differ only where CuPy is the device (tests/gpu/)"),
    ("the end-of-run check on the CPU", r"_check_finite\(bad, formulation, members\)",
     r"_check_finite\(bad, None, members\)",
     "on NumPy every epoch ends with this check, which raises first; the last one finds something "
     "new only on a GPU, where the per-epoch check is skipped"),
    ("the GPU kernel's choice", r"GROUP_NORM_KERNEL", r".",
     "the kernel name picks between GPU kernels; on the CPU there is one"),
]


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def diff_of(name):
    lines = sh("mutmut", "show", name).splitlines()
    minus = " ".join(l[1:].strip() for l in lines if l.startswith("-") and not l.startswith("---"))
    plus = " ".join(l[1:].strip() for l in lines if l.startswith("+") and not l.startswith("+++"))
    return minus, plus


def classify(minus, plus):
    for kind, rules in (("equivalent", EQUIVALENT), ("unreachable", UNREACHABLE),
                        ("not pinned", NOT_PINNED)):
        for label, old, new, why in rules:
            if re.search(old, minus) and re.search(new, plus):
                return kind, label, why
    return "not explained", "", ""


def main():
    status = {}
    for line in sh("mutmut", "results", "--all", "true").splitlines():
        if "__mutmut_" in line and ": " in line:
            name, st = line.strip().rsplit(": ", 1)
            status[name] = st
    by_module = collections.defaultdict(collections.Counter)
    lived = []
    for name, st in sorted(status.items()):
        module = name[:name.index(".x")]
        by_module[module][st] += 1
        if st in ("survived", "no tests"):
            minus, plus = diff_of(name)
            kind, label, why = classify(minus, plus)
            by_module[module][kind] += 1
            lived.append((kind, label, why, name, st, minus, plus))
    out = ["# Mutation testing: the score and every mutant that lived", "",
           "Made by `python tests/mutation_report.py` after `mutmut run` (docs/testing.md).", "",
           "| module | mutants | killed | timeout | survived | no tests | equivalent | "
           "unreachable on a CPU | caught of the non-equivalent |", "|---|" + "---:|" * 8]
    total = collections.Counter()
    for module, c in sorted(by_module.items()):
        total.update(c)
        out.append(_row(module, c))
    out.append(_row("**all**", total))
    out += ["", "The score: (killed + timed out + crashed) / (mutants - equivalent). An unreachable "
            "mutant counts as not caught.", ""]
    for kind in ("not explained", "not pinned", "unreachable", "equivalent"):
        rows = [x for x in lived if x[0] == kind]
        out += [f"## {kind.capitalize()} ({len(rows)})", ""]
        if not rows:
            out += ["None.", ""]
            continue
        for label in sorted({x[1] for x in rows}):
            group = [x for x in rows if x[1] == label]
            if label:
                out += [f"**{label}** ({len(group)}): {group[0][2]}.", ""]
            out += [f"- `{x[3]}` ({x[4]}): `{x[5][:110]}` -> `{x[6][:110]}`" for x in group] + [""]
    print("\n".join(out))
    unexplained = sum(1 for x in lived if x[0] == "not explained")
    print(f"{unexplained} of {len(lived)} living mutants not explained", file=sys.stderr)


def _row(module, c):
    n = sum(c[s] for s in ("killed", "timeout", "segfault", "survived", "no tests", "not checked"))
    caught = c["killed"] + c["timeout"] + c["segfault"]
    real = n - c["equivalent"]
    score = f"{100 * caught / real:.1f}%" if real else "-"
    return (f"| {module} | {n} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} | "
            f"{c['equivalent']} | {c['unreachable']} | {score} |")


if __name__ == "__main__":
    main()
