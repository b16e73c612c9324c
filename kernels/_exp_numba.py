"""exp for numba loops that LLVM can vectorise: float32 arithmetic and integer bits only.

    exp_parts(u, sign, e, k)    exp(sign * u[i]) = e[i] * k.view(np.float32)[i], |u| clamped to 87

Why: LLVM vectorises a loop only if every call in it has a vector form, and numba's exp (libm's)
has none here (no SVML), so a loop that calls it runs one value at a time. This exp is written
out: Cody-Waite reduction, exp(v) = 2^j e^f with j = round(v log2(e)) and f = v - j ln 2
(|f| <= ln2/2; ln 2 in two parts, so that f keeps its accuracy when j is large); e^f is its
Taylor series to f^7 (the first term left out, f^8/8!, is at most 5.3e-9 of it); 2^j is the
float whose exponent field is j + 127, the int (j + 127) << 23 read as a float32. The caller
multiplies the two parts in a loop of its own (the view cannot be taken inside this one).
Within 1.5e-7 relative of float64 on |v| <= 87 (tests/test_kernels_fused.py, through the
sigmoid); |v| is clamped to 87 first, so the result stays in the normal float32 range
(exp(-87) is about 1.6e-38; NumPy's float32 exp gives 0 below about -103.9).

Used by kernels/_groupnorm_silu_numba.py (the sigmoid) and kernels/_softmax_numba.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit

F = np.float32  # every constant below is float32, so that no loop is promoted to float64
LOG2E = F(1.4426950408889634)
LN2_HI, LN2_LO = F(0.693359375), F(-2.12194440e-4)  # ln 2 = LN2_HI + LN2_LO to 1e-11; LN2_HI
# = 355/512 has 9 significant bits, so j LN2_HI is exact for |j| < 2^15
ONE = F(1.0)
V_MAX = F(87.0)  # |v| clamped to 87: exp(v) stays within the normal float32 range
C2, C3, C4, C5, C6, C7 = (F(1 / 2), F(1 / 6), F(1 / 24), F(1 / 120), F(1 / 720), F(1 / 5040))


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def exp_parts(u, sign, e, k):
    """e[i] (float32) and k[i] (int32) for v = sign * clamp(u[i], -87, 87), sign = +-1:
    exp(v) = e[i] * 2^j, 2^j the float32 whose bits are k[i]."""
    for i in range(u.shape[0]):
        v = sign * min(max(u[i], -V_MAX), V_MAX)
        j = F(np.int32(v * LOG2E + F(127.5)))  # round(v log2 e) + 127: truncates a positive
        jm = j - F(127.0)
        f = (v - jm * LN2_HI) - jm * LN2_LO
        e[i] = ONE + f * (ONE + f * (C2 + f * (C3 + f * (C4 + f * (C5 + f * (C6 + f * C7))))))
        k[i] = np.int32(j * F(8388608.0))  # (j + 127) << 23: exact in float32, then converted
