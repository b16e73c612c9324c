"""How much of a guided image sampler's time the Heun step's own arithmetic takes on the CPU (the
reason the CPU runs minisims.ops' lines rather than a fused kernel; docs/notes/kernels-other.md).

    python benchmarks/heun_share.py
"""
import time, numpy as np
from minisims import ops
from minisims.images.presets import PRESETS
from minisims.nn.unet import UNet
from minisims.diffusion import EDM, EDMPrecond
p = PRESETS["cpu"]
net = UNet(p.unet_config(), np.random.default_rng(0))
aux = net.copy()
form = EDM(precond=EDMPrecond(0.5), num_steps=p.num_steps, member_ndim=0, data_ndim=3)
spent = [0.0]
def timed(f):
    def g(*a):
        t = time.perf_counter(); r = f(*a); spent[0] += time.perf_counter() - t; return r
    return g
ops.heun_euler, ops.heun_correct = timed(ops.heun_euler), timed(ops.heun_correct)
n = 64
t = time.perf_counter()
form.sample(net, (n, 3, p.resolution, p.resolution), np.random.default_rng(1), aux=aux, w=1.0)
total = time.perf_counter() - t
print(f"preset cpu, {n} images, {p.num_steps} steps, guided: sampler {total:.2f} s, Heun arithmetic {spent[0]*1e3:.1f} ms ({spent[0]/total:.2%})")
