"""SIMS in one file: Algorithm 1 of the paper on its 2D Gaussian, in NumPy alone.

Read this first. It is all of SIMS (Self-IMproving diffusion models with Synthetic data) on the
toy of the paper's Section 4.2.1, top to bottom, with no minisims import:

  0. the data, p_r = N([0, 0], [[2, 1], [1, 2]]), |D| = 1000 points;
  1. a small MLP with its forward and hand-written backward, and Adam;
  2. DDPM: the cosine schedule, the epsilon-prediction loss, the ancestral sampler;
  3. Algorithm 1: train the base model on D; sample a synthetic set S from it; fine-tune a copy of
     it on S alone (the auxiliary model); sample with eq. 5, eps = (1 + w) eps_base - w eps_aux;
  4. W2 of base and SIMS samples against p_r, from their fitted mean and covariance.

The settings are those of `python -m minisims.toy` (the library's version of the same thing,
which runs many runs at once); tests/test_sims_in_one_file.py checks that the two agree.

    python tutorials/sims_in_one_file.py                 # one run at w = 3, a second or two
    python tutorials/sims_in_one_file.py --runs 8 --w 2  # the mean over 8 runs
    python tutorials/sims_in_one_file.py --fast          # small sizes; MINISIMS_TUTORIAL_FAST=1 too
"""
import argparse
import copy
import os

import numpy as np
from scipy.linalg import sqrtm

# N points, D data dimension (2), H hidden width, T noise levels (t = 0 .. T-1)

# ---- 0. The data: the paper's 2D Gaussian ----------------------------------------------------
MEAN = np.array([0.0, 0.0])               # D
COV = np.array([[2.0, 1.0], [1.0, 2.0]])  # D,D


def sample_data(n, rng):
    """n points of p_r, float32. Returns (n,D)."""
    z = rng.standard_normal((n, 2))  # n,D
    return (MEAN + z @ np.linalg.cholesky(COV).T).astype(np.float32)  # n,D


# ---- 1. The network: eps(x, t), an MLP fed x and the raw step index t --------------------------
class MLP:
    """Linear(D+1 -> H), 4 x [Linear(H,H), ReLU], Linear(H -> D): the layout of the DDPM toy the
    paper cites. Parameters: a list [W0, b0, W1, b1, ...], float32, PyTorch's default init."""

    def __init__(self, hidden, rng, depth=4, dim=2):
        sizes = [dim + 1] + [hidden] * (depth + 1) + [dim]
        self.relu = [False] + [True] * depth + [False]  # a ReLU after the 4 middle layers
        self.params = []
        for din, dout in zip(sizes[:-1], sizes[1:]):
            k = 1 / np.sqrt(din)
            self.params += [rng.uniform(-k, k, (din, dout)).astype(np.float32),  # Din,Dout
                            rng.uniform(-k, k, dout).astype(np.float32)]         # Dout

    def forward(self, x, t):
        """x (N,D), t (N,) -> predicted noise (N,D), float32."""
        h = np.concatenate([x, t[:, None]], axis=1).astype(np.float32)  # N,D+1
        self.inputs, self.masks = [], []  # keep each layer's input (dW needs it) and ReLU mask
        for i, relu in enumerate(self.relu):
            W, b = self.params[2 * i], self.params[2 * i + 1]  # Din,Dout  Dout
            self.inputs.append(h)
            h = h @ W + b  # N,Dout
            if relu:
                self.masks.append(h > 0)  # N,H
                h = h * self.masks[-1]  # N,H
        return h  # N,D

    def backward(self, dy):
        """dy = dL/d(output) (N,D) -> self.grads, dL/dparams in the order of self.params."""
        self.grads = [None] * len(self.params)
        masks = list(self.masks)
        for i in reversed(range(len(self.relu))):
            if self.relu[i]:
                dy = dy * masks.pop()  # N,H: the ReLU passes gradient where its input was > 0
            self.grads[2 * i] = self.inputs[i].T @ dy  # Din,Dout  dW = x^T dy
            self.grads[2 * i + 1] = dy.sum(axis=0)  # Dout      db = sum over points
            dy = dy @ self.params[2 * i].T  # N,Din     dx = dy W^T
        return dy  # N,D+1


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, updating the parameters in place."""

    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params, grads):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t  # the bias corrections
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g  # the running mean of the gradient
            v *= self.b2
            v += (1 - self.b2) * g * g  # ... and of its square
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


# ---- 2. DDPM (Ho et al. 2020) with the cosine schedule (Nichol & Dhariwal 2021) ---------------
T = 40
_f = np.cos((np.arange(T) / T + 0.008) / 1.008 * np.pi / 2) ** 2  # T
ALPHA_BAR = _f / _f[0]  # T, alpha_bar_0 = 1: x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
BETAS = np.zeros(T)  # T, beta_0 = 0
BETAS[1:] = np.minimum(1 - ALPHA_BAR[1:] / ALPHA_BAR[:-1], 0.999)  # beta_t = 1 - ab_t / ab_{t-1}


def train(net, data, epochs, rng, batch_size=2048, lr=1e-3):
    """Fit net to data (N,D) with the epsilon-prediction loss || eps(x_t, t) - eps ||^2 (Ho et
    al. eq. 14), t ~ U{1..T-1}. Batch 2048 > N: one full-batch step per epoch, as in the toy."""
    opt = Adam(net.params, lr)
    for _ in range(epochs):
        perm = rng.permutation(len(data))  # N
        for start in range(0, len(data), batch_size):
            y = data[perm[start:start + batch_size]]  # B,D
            t = rng.integers(1, T, size=len(y))  # B
            eps = rng.standard_normal(y.shape).astype(np.float32)  # B,D
            ab = ALPHA_BAR[t, None].astype(np.float32)  # B,1
            x_t = np.sqrt(ab) * y + np.sqrt(1 - ab) * eps  # B,D, the forward process
            err = net.forward(x_t, t) - eps  # B,D
            net.backward(2 * err / err.size)  # B,D: dL/d(output) of L = mean(err^2)
            opt.step(net.params, net.grads)


def sims_combine(eps_base, eps_aux, w):
    """Paper eq. 5, s = (1 + w) s_base - w s_aux. The weights sum to one, so it holds for the
    predicted noise too (eps = -sqrt(1 - ab_t) s). w = 0: the base model; w = -1: the aux."""
    return (1 + w) * eps_base - w * eps_aux  # N,D


def sample(base, n, rng, aux=None, w=0.0):
    """Ancestral DDPM sampling (Ho et al. Algorithm 2, variance beta_t), T-1 steps, guided by
    eq. 5 when aux is given. The state is float64. Returns (n,D)."""
    x = rng.standard_normal((n, 2))  # n,D, x_{T-1} ~ N(0, I)
    for t in range(T - 1, 0, -1):
        steps = np.full(n, t)  # n
        eps = base.forward(x, steps).astype(np.float64)  # n,D
        if aux is not None and w != 0:
            eps = sims_combine(eps, aux.forward(x, steps).astype(np.float64), w)  # n,D
        # the posterior mean (Ho et al. eq. 11), then noise of variance beta_t but at the last step
        mean = (x - BETAS[t] / np.sqrt(1 - ALPHA_BAR[t]) * eps) / np.sqrt(1 - BETAS[t])  # n,D
        x = mean + np.sqrt(BETAS[t]) * rng.standard_normal((n, 2)) if t > 1 else mean  # n,D
    return x


# ---- 3. Algorithm 1 ---------------------------------------------------------------------------
# run()'s defaults are the paper's toy sizes, as in python -m minisims.toy; SMALL is --fast
SMALL = dict(n_real=1000, n_synth=500, n_eval=500, hidden=32, base_epochs=100, aux_epochs=50)


def run(seed=0, w=3.0, n_real=1000, n_synth=2000, n_eval=2000, hidden=64, base_epochs=100,
        aux_epochs=50):
    """One run of Algorithm 1 from one seed: {"w2_base", "w2_sims"}, both measured on n_eval
    samples drawn with the same random numbers, so they differ only by the guidance. (The
    library trains many runs at once on an ensemble axis; here a run is one model.)"""
    rng = np.random.default_rng(seed)
    data = sample_data(n_real, rng)  # n_real,D
    base = MLP(hidden, rng)
    train(base, data, base_epochs, rng)  # 1. the base model s_r, trained on D
    S = sample(base, n_synth, rng).astype(np.float32)  # 2. the synthetic set S from the base
    aux = copy.deepcopy(base)
    train(aux, S, aux_epochs, rng)  # 3. the auxiliary model s_s: a copy fine-tuned on S alone
    del S  # Algorithm 1 discards S
    eval_seed = int(rng.integers(2 ** 63))
    x_base = sample(base, n_eval, np.random.default_rng(eval_seed))  # n_eval,D
    x_sims = sample(base, n_eval, np.random.default_rng(eval_seed), aux, w)  # 4. eq. 5
    return {"w2_base": w2_to_p_r(x_base), "w2_sims": w2_to_p_r(x_sims)}


# ---- 4. The metric: W2 between the samples' Gaussian fit and p_r ------------------------------
def w2_to_p_r(x):
    """W2(N(mu, S), p_r) = sqrt(||mu - mu_r||^2 + Tr(S + S_r - 2 (S_r^1/2 S S_r^1/2)^1/2)),
    mu and S (n-1) fitted to the samples x (n,D)."""
    mu, S = x.mean(axis=0), np.cov(x, rowvar=False)  # D  D,D
    root = sqrtm(COV).real  # D,D
    cross = sqrtm(root @ S @ root).real  # D,D
    d2 = ((mu - MEAN) ** 2).sum() + np.trace(S + COV - 2 * cross)
    return float(np.sqrt(max(d2, 0.0)))


def main(argv=None):
    p = argparse.ArgumentParser(
        description="SIMS (Algorithm 1) on the paper's 2D Gaussian in one NumPy file: prints the "
                    "W2 to p_r of the base model and of SIMS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the first run")
    p.add_argument("--w", type=float, default=3.0, help="guidance strength w of eq. 5")
    p.add_argument("--runs", type=int, default=1, help="independent runs (seeds seed, seed+1, ...)")
    p.add_argument("--fast", action="store_true", help="small sizes, a fraction of a second a run "
                   "(hidden 32, n_s 500, 500 samples measured); also MINISIMS_TUTORIAL_FAST=1")
    args = p.parse_args(argv)
    if args.runs < 1 or not np.isfinite(args.w):
        p.error(f"need --runs >= 1 and a finite --w, got {args.runs} and {args.w}")
    sizes = SMALL if args.fast or os.environ.get("MINISIMS_TUTORIAL_FAST") == "1" else {}
    results = []
    for k in range(args.runs):
        r = run(args.seed + k, args.w, **sizes)
        results.append(r)
        print(f"run {k + 1} (seed {args.seed + k}): base W2 {r['w2_base']:.4f}   "
              f"SIMS (w = {args.w:g}) W2 {r['w2_sims']:.4f}")
    base = np.array([r["w2_base"] for r in results])
    sims = np.array([r["w2_sims"] for r in results])
    print(f"base W2 {base.mean():.4f}   SIMS W2 {sims.mean():.4f}   (mean of {args.runs} "
          f"run{'s' * (args.runs > 1)}; SIMS better in {int((sims < base).sum())}/{args.runs})")


if __name__ == "__main__":
    main()
