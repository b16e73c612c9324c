"""Convolution, version "direct": no column buffer; a register-blocked micro-kernel reads the
padded NHWC input in place (numba, both cores through a pool of 2 threads).

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, T = kh*kw taps, s stride, p padding, M = Ho*Wo output pixels of one image
# P x Q the micro-kernel's tile (P scalars broadcast, Q = 2 vector registers of outputs)

What changes from kernels/_conv2d_numba.py's "numba" version (im2col + BLAS):
- No columns. Each image is copied once into a small zero-bordered NHWC buffer (Hp*Wp*C floats,
  about 300 KB at 32x32x64, so it stays in L2; the copy is a transpose, done channel by channel,
  see ``_channel_blocks``), and the micro-kernel reads its taps from there:
  output pixel m, tap (i, j), channel c is pad[(s*h + i)*Wp + s*v + j, c]. NHWC inside because
  then the C values one pixel needs for one tap are contiguous and the P pixels of a tile are
  C (stride 1) apart; the public API stays NCHW.
- The micro-kernel (``_tile``) keeps a tile of P x Q results in registers: P values of one
  operand broadcast, Q consecutive values of the other loaded as two AVX vectors (Q = 16 float32
  or 8 float64), P*Q/8 fused multiply-adds per step. Forward and input gradient: P output pixels
  x Q output channels, summed over taps and input channels. Weight gradient: P input channels x
  Q output channels of one tap, summed over the output pixels (dw[t] = x_tap^T dy, a direct
  reduction). The same kernel serves both (see ``_tile``'s docstring).
- The forward writes NCHW output straight from the tile (P*Q scattered stores per
  T*C*P*Q multiply-adds: negligible), so there is no NHWC -> NCHW pass either.
- The weights are packed once per call in blocks of Q output channels, (Cout/Q, T, C, Q), zero
  filled past Cout: a tile's weights are one contiguous 37 KB panel (L1/L2), and the forward
  runs every pixel tile of an image against one panel before the next (measured 2-10% faster
  than all panels per pixel tile).
- The weight gradient copies each image, and its dy, into channel blocks instead of NHWC:
  x as (C/P, Hp*Wp, P), dy as (Cout/Q, Ho*Wo, Q) (``_channel_blocks``). A tile (P input
  channels x Q output channels of one tap, summed over all the image's output pixels) then reads
  two sequential streams, P floats and Q floats a pixel, where in NHWC each pixel was a new
  cache line of which it used P of 16 floats. It loops over (channel block, output block, tap),
  each tile over the whole image. Its accumulators live in a tiled array (T, C/P, Cout/Q, P, Q),
  so a tile's P x Q sums are one contiguous block (copying them in and out of a (T, C, Cout)
  array cost a third of the time). Each sum runs over the pixels in order (n, h, v).
  BLAS over shifted NHWC slabs (dw[t] = x_pad[shifted rows]^T dy_pad, no column copy, dy
  zero-padded to the padded width) lost: 1.3-1.5x slower on one core, and OpenBLAS split its
  (64, 75k) @ (75k, 64) products so badly over two threads that it took 8x longer.
- Both cores: the forward (and input gradient) cut the batch into ranges of images, one per
  thread, run by the pool of kernels/_threads.py (THREADS threads, NUMBA_NUM_THREADS by
  default) calling nogil kernels; each image is computed by one thread, so y and dx do not
  depend on the thread count. The weight gradient's threads share the tiles instead, (channel
  block, output block) pairs, and each tile sums the whole batch, image after image: every dw
  value is one sum in one order (n, h, v) whichever thread computes it, so dw does not depend on
  the thread count either, and there are no partial sums to clear and add (at batch 8 they had
  been one (T, C, Cout) array per image; see the UNet's shapes below).
- The input gradient at stride 1 (square kernel, p <= k-1) is the forward convolution of dy with
  the flipped, channel-transposed kernel (kernels/_conv2d_common.py), through the same kernel.
  At other strides (or shapes) it falls back to the "numba" version's col2im path.

What numba does with the micro-kernel, checked with ``_tile.inspect_asm(sig)``: numba turns off
LLVM's SLP vectoriser by default, and with it the P*Q accumulators stay scalar (P*Q vfmadd231ss,
4-8 GFLOP/s on one core). The loop vectoriser cannot help either: it vectorises the innermost
loop, here the reduction over channels, which needs P*Q vector accumulators and spills. So the
kernel is compiled with SLP turned on (``numba.core.config.SLP_VECTORIZE`` set around this
module's eager compilation only) and ``fastmath={"contract"}`` (fused multiply-add allowed, no
reassociation, so the loop vectoriser leaves the channel loop alone): the asm then holds
2*P vfmadd231ps on ymm registers plus P vbroadcastss per step, the accumulators in registers
(about 55 GFLOP/s on one core in a hot-cache loop, 80-85% of this machine's one-core sgemm).
Tiles measured there: 5x16 and 4x24 (10-12 accumulators) best, 6x16 close, 4x16 (8) and 8x8
(one vector per pixel, 8 broadcasts per 8 FMAs) 40-70% slower.
Plain loops with a (P, Q) accumulator array were also unrolled and scalarised by LLVM, never
vectorised, so the tile is generated source (``_tile_source``): P*Q lines of ``s += x * w``.
Indices are unsigned (np.uint64) so numba emits no negative-index wraparound in the loop.

Measured on one core (issue 9 part 4; A/B in one process, load average 1-2.7, this machine is
shared; N 64, C 64, 3x3; every kept change gives bit-identical results, the sums' order is
unchanged):
- Won: the padded copy. Reading all C channels of one pixel, as it did, touches C lines H*W
  floats apart; at 32x32 that is 4 KB, one L1 set, and each line was evicted before its next
  use. Row by row, 8 channels at a time: the copy of 64 images 15-21 -> 7-9 ms at 32x32
  (unchanged at 16x16, about 2 ms), forward 83-85 -> 70-76 ms. It runs once per image in the
  forward, the input gradient and the weight gradient. (Since replaced: channel by channel,
  below.)
- Won: the weight gradient's loop order (channel block, output block, tap) instead of (tap,
  channel block, output block): with the copy above, 103 -> 88 and 123 -> 102 ms at 32x32
  (the copy alone about 10 ms of that); unchanged at 16x16. (output block, channel block, tap):
  the same as kept. Then ROW_BLOCK_PIXELS 128 -> 64, seven A/B runs: 32x32 9-15% faster in
  three, within 2% in three, 7% slower in one; 16x16 2-9% faster in all seven. 32 was 5%
  slower than 64, 256 16% slower than 128. (Row blocks are gone since: see channel blocks.)
- Whole benchmark (bench_conv.py --repeats 9 --threads 1, load 0.9-1.1), 32x32: 320-324 ->
  244-250 ms, 58-62% -> 76-80% of sgemm, 0.96-1.07x -> 0.80-0.83x PyTorch's time. 16x16: no
  gain that the noise lets through: 58-72 ms, 1.03-1.04x before; 63-78 ms, 0.96-1.15x after
  (forward and input gradient on a par with PyTorch's, the weight gradient 5-10% behind).
  Two threads (default, load 0.8-1.3): 32x32 189-194 ms, 57-58% of the two-core sgemm,
  1.06-1.13x PyTorch's time; 16x16 65-69 ms, 0.93-1.18x.
- Lost or no change: the same padded copy for dy's NHWC copy (about 10% slower at 16x16, kept
  the channel-by-channel loop); grouping the forward's taps by kernel row so that a third of
  the 37 KB weight panel stays in L1, with the sums kept in memory between rows (99 -> 109 ms
  at 32x32; with blocks of 16 pixel tiles, no change); a 6x16 tile (40-50% slower); taking
  the row slices out of the tap loop (no change: the tile is inlined, no spills in the asm).

Then the 16x16 shape (issue 9 part 4; A/B of the module versions, or of variants of one phase, in
one process, per phase, PyTorch's phases through torch.ops.aten.convolution_backward; results
bit-identical to the previous version, checked with np.array_equal, stride 1 to 3, float32/64):
- Where the time went, one core, load 0.4-0.6: forward 20.6-21.3 ms (PyTorch 19.0-19.8), input
  gradient 20.1-21.9 (18.7-20.2), weight gradient 27.5-28.4 (23.9-29.4); in the weight gradient,
  4.3-4.4 ms the copies of x and dy, 24.5 ms the tiles (about 50 GFLOP/s). The tile alone in a
  hot loop: 90-94 GFLOP/s reading as the forward does (contiguous channels), 74-78 reading NHWC
  pixel after pixel over 4x16 pixels, 53-56 over 16x16 pixels (two new lines a pixel, 32 KB:
  all of L1). So the weight gradient lost on its NHWC reads, not on its arithmetic.
- Won: channel blocks for the weight gradient (see above), each tile over the whole image.
  Weight gradient alone, two to four A/B runs each, load 0.6-1.1: 16x16 29.6-29.9 -> 23.5-25.3
  ms, 32x32 80-115 -> 65-88 ms, 64x64 (N 16) 86-130 -> 68-106 ms; its two copies 4.4 -> 2.2 ms
  at 16x16. Row blocks were no faster than the whole image (64 pixels 1-34% slower, 256 and
  512 up to 26% slower or equal), so ROW_BLOCK_PIXELS is gone.
- Won: the forward's (and input gradient's) NHWC copy channel by channel, the same function
  with B = C, instead of row by row 8 channels at a time: the copy alone 1.7-2.7 -> 1.4-1.8 ms
  at 16x16, 8.3-9.6 -> 6.2-6.7 ms at 32x32; the forward 22.3-22.6 -> 20.1-20.7 ms at 16x16,
  83-85 -> 75-81 ms at 32x32 (three runs each, load 1.3-1.6). Copy timings differ 2-4x from one
  process to the next (where the buffers fall relative to each other: 4K aliasing, it seems),
  so copies were only compared within a process, over several processes.
- Lost or no change (one run each unless said): in the NHWC weight gradient, two or four
  images per block of rows (26.4-28.9 vs 27.5 ms), whole-image blocks (27.0 vs 27.5), the
  accumulators ordered (C/P, Cout/Q, T, P, Q) so that a block's taps follow each other (28.1 vs
  28.1); an unrolled 8-channel copy (four runs; x: 1.1-2.0 ms, no better than channel by
  channel; dy: 1.35-2.0 vs 1.0-1.2 ms); an 8x8 transpose written as 64 scalars for the SLP
  vectoriser (it emitted no shuffles; 1.65 vs 1.71 ms at 16x16, 7.3 vs 6.5 at 32x32).
- Whole benchmark, three before/after pairs of runs, interleaved. One core (bench_conv.py
  --threads 1 --repeats 9, load 1.0-1.2): 16x16 57-69 ms, 65-75% of sgemm, 1.05-1.13x
  PyTorch's time -> 52-68 ms, 73-84%, 0.93-0.99x; 32x32 222-285 ms, 62-79%, 0.81-0.95x ->
  246-261 ms, 72-78%, 0.79-0.94x (no loss the noise lets through). Two threads (default,
  load 0.9-1.6): 16x16 59-79 ms, 35-46% of the two-core sgemm, 1.14-1.58x -> 49-58 ms, 49-55%,
  0.78-0.93x; 32x32 189-206 ms, 52-58%, 1.05-1.26x -> 160-172 ms, 64-66%, 0.96-1.05x.

Then the UNet's own shapes (issue 9: "auto" on the CPU since). benchmarks/bench_conv.py --unet
times the 24 distinct convolutions of bench_unet.py's default network at batch 8, 62 a step
(median of 7 rounds, load 0.4-0.6, ms per training step, each shape's call times its count):

    version    fwd     dx     dw    sum  vs torch
    numba    475.1  401.5  453.2 1329.7  1.55x
    direct   362.3  347.0  419.3 1128.5  1.32x
    torch    261.3  238.9  356.1  856.3  1.00x

This version is at or below PyTorch's time at 32x32 with 128-192 input channels (0.92-0.95x),
1.06x at 64->64, 1.2-1.4x for the 3x3 at 16x16, 1.75-1.9x at 8x8, 1.5-1.8x for the stride-2
ones, 1.65-2.1x for the 1x1 and 1.7-2.0x with 3 input or output channels. It loses to "numba"
at 8x8 (3x3 128->128: 10.9 vs 9.9 ms a call, its weight gradient 4.2 vs 3.4; 256->128: 19.6 vs
15.8, dw 9.4 vs 5.7; the 1x1 128->384 and 128->128), at 16x16 192->128 (35.6 vs 33.2; 128->128
a tie) and at stride 2 with 128 channels (13.0 vs 9.6, dw 6.6 vs 2.9): where each image's work
is small next to the weights (dw's 8 partial sums of T*C*Cout floats, zeroed and added each
call) and next to the hand-off of each image to a thread. Those are 18 of the 62 calls.
The first tables, without a pause between contenders, had each contender paying for the one
before it: the OpenBLAS worker of "numba" spinning on through the next contender's calls made
"direct" and torch look up to 2x slower (bench_conv.py's PAUSE).
Inside the UNet step the same spinning worker, woken by attention's products and the embedding's
Linear, cost this version 30% of its convolution time; kernels/conv2d.py has the numbers and
the remedy (BLAS on one thread during the UNet's passes) under which it became "auto".

Then the small shapes, where the per-call costs dominated (A/B against the previous module in one
process, interleaved calls, medians; load 0.2-0.9; one-off scripts, not kept):
- The weight gradient summed the batch in 8 ranges of images, one partial (T, C, Cout) array per
  range, cleared and added each call: at batch 8, one per image. Now the threads share the tiles
  and each tile sums the whole batch (see "Both cores" above). 9 calls each, ms: 3x3 8x8
  128->128 4.73 -> 3.10, 256->128 8.52 -> 5.33, 1x1 128->384 8x8 1.85 -> 1.34, 3->64 at 32x32
  1.68 -> 1.42, 64->3 2.61 -> 2.12, stride 2 64->64 3.08 -> 2.52; ties where the images are
  large: 64->64 32x32 7.18 -> 7.33, and at N 64 32x32 51.3 -> 53.5, 16x16 14.58 -> 14.66. Four
  or eight chunks of tiles on the two threads instead of one each: up to 45% slower (each chunk
  copies all of dy's blocks, image by image). The same copies into whole-batch buffers first,
  then the tiles from there: 16-46% slower at 32x32 (the tiles read the blocks from L3, not from
  the L2 the copy had just filled).
- _threads.CHUNKS_PER_THREAD 4 -> 1, the forward at batch 8, 15 calls each: 64->64 32x32 7.46 -> 6.11,
  128->128 16x16 6.90 -> 6.31, 1x1 128->384 16x16 3.77 -> 3.33, 3x3 128->128 8x8 2.45 -> 2.30,
  1x1 128->128 8x8 0.71 -> 0.46; N 64: 32x32 45.7 -> 43.0, 16x16 11.85 -> 10.43. Running one
  range on the calling thread instead of handing all to the pool: within 3% either way, not kept
  then; kept later with the pool of kernels/_threads.py, whose docstring has the measurements.
- The weights' packing, one copy per block of Q output channels from a transposed view instead
  of one transposing copy: 0.62 -> 0.14 ms for 128->128 3x3 (``_pack_weights``); it runs in
  every forward and input gradient, about a quarter of the forward at 8x8 before.
- No gain: the weight gradient in rounds of several images (the blocks of G images copied one
  after the other, each tile summing over all their rows in one call, the same sums in the same
  order): at 8x8, where a tile's call covers only 64 pixels, G = 8 gave 3.09 -> 3.50 ms for
  128->128 and 6.42 -> 5.81 for 256->128, and a 1x1 128->384 at 16x16 lost (4.23 -> 6.40) as
  the blocks outgrew L2; a 1x64 image took 2.38 ms against 2.68 at 8x8, so short rows cost little
  either. At 8x8 the weight gradient runs at about 50 GFLOP/s on two threads, the forward at
  about 110.
- No gain: for the 1x1 forward, blocks of 1-16 pixel tiles each run against every weight panel
  (the tiles' pixels staying in L1) instead of every tile against one panel: 6.7-7.6 ms against
  6.6 at 128->384 16x16, and from 7% faster (128->128 at 16x16, 4 tiles) to 15% slower at four
  other 1x1 shapes (one core, batch 8, medians of 15 interleaved calls). The 1x1 forward's tile sums only C products, so loading,
  storing and scattering its P x Q results weighs as much; kernels/_conv2d_pointwise.py took
  those convolutions over.
- Lost: 1x1 convolutions (forward and input gradient) straight from NCHW through the same tile
  with the operands' roles swapped (5 output channels broadcast, 16 consecutive pixels of a row
  of x as the vectors; the same products in the same order, so the same bits, checked). Forward +
  input gradient at batch 8, 15 calls each: 10-16% faster at 8x8, 10-52% slower at 16x16 and
  32x32 (sum over the UNet's ten 1x1 shapes 39.6 -> 46.8 ms); copying each tile's 16 pixels of
  every channel to a contiguous block first (x's rows are 4 KB apart at 32x32) was slower still
  (44.5 -> 73.5). Not kept. Since then the 1x1 convolutions (stride 1, no padding) leave this
  micro-kernel for one BLAS product per image, the images on the same threads inside a network's
  pass (kernels/_conv2d_pointwise.py, 1.4-1.9x faster there; different bits from the
  micro-kernel's, the same on any thread count). Likewise the weight gradient of larger kernels
  with at most 64 output pixels an image (8x8) leaves it for columns and one BLAS product per
  range of 4 images (kernels/_conv2d_small_dw.py: 21-27% faster at the UNet's 8x8 shapes).
- bench_conv.py --unet (repeats 5, load 0.4-0.9), ms per training step: before, 1149 (fwd 349,
  dx 330, dw 470) against torch 891, 1.29x; after, 1048 (318, 334, 396) against 837, 1.25x.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit
from numba.extending import overload
from numba.core import config as _numba_config

from ._conv2d_common import check_shapes, flipped_padding
from . import _conv2d_pointwise as _pointwise
from . import _conv2d_small_dw as _small_dw
from . import _threads
from ._threads import run as _run, split as _split

U = np.uint64  # unsigned indices: numba adds no wraparound test for negative values
TILE = {np.dtype(np.float32): (5, 16), np.dtype(np.float64): (5, 8)}  # (P, Q) per dtype: Q fills
# two 256-bit registers; P*Q/8 + 2 + 1 <= 16 YMM registers (accumulators, weights, broadcast)


# ------------------------------------------------------------------------------------------------
# The micro-kernel, written out for a given tile (P, Q)
# ------------------------------------------------------------------------------------------------

def _tile_source(P, Q):
    """Python source of the micro-kernel for a P x Q tile:

        acc[p, q] += sum_{r1, r2} a[pa[p] + a1[r1] + r2*sa] * b[b1[r1] + r2*bs + q]

    Forward (P pixels x Q output channels): r1 = tap, r2 = input channel, a = padded NHWC image,
    pa = the pixels' offsets, a1 = the taps' offsets, sa = 1, b = the packed weight panel.
    Weight gradient (P input channels x Q output channels of one tap): r1 = output row, r2 =
    output column, a = the padded image in blocks of P channels, pa = block + tap offset +
    channel, a1 = the rows' offsets, sa = s*P, b = dy in blocks of Q channels, bs = Q.
    The accumulators are P*Q scalars s{p}_{q} so that LLVM can hold them in P*Q/8 registers."""
    L = [f"def _tile_{P}x{Q}(a, pa, a1, sa, n2, b, b1, bs, acc):"]
    for p in range(P):
        L.append("    " + "; ".join(f"s{p}_{q} = acc[{p}, {q}]" for q in range(Q)))
    L.append("    for r1 in range(a1.shape[0]):")
    for p in range(P):
        L.append(f"        o{p} = pa[{p}] + a1[r1]")
    L.append("        for r2 in range(U(n2)):")
    L.append("            k = b1[r1] + r2 * bs")
    L.append("            " + "; ".join(f"w{q} = b[k + U({q})]" for q in range(Q)))
    for p in range(P):
        L.append(f"            x = a[o{p} + r2 * sa]")
        L.append("            " + "; ".join(f"s{p}_{q} += x * w{q}" for q in range(Q)))
    for p in range(P):
        L.append("    " + "; ".join(f"acc[{p}, {q}] = s{p}_{q}" for q in range(Q)))
    return "\n".join(L) + "\n"


def _tile_signature(dtype):
    f = numba.from_dtype(np.dtype(dtype))
    u = numba.uint64
    return (f[::1], u[::1], u[::1], u, numba.int64, f[::1], u[::1], u, f[:, ::1])


def _compile_tile(dtype):
    """Compile the tile of ``dtype`` eagerly with LLVM's SLP vectoriser on (numba's default is
    off), restoring the setting afterwards. The source is compiled under this file's name so
    that numba's on-disk cache (cache=True) can key it to this file, which holds the generator."""
    P, Q = TILE[np.dtype(dtype)]
    ns = {"U": U, "__name__": __name__}  # the module numba records for its cache
    exec(compile(_tile_source(P, Q), __file__, "exec"), ns)  # noqa: S102 (our own source)
    old = _numba_config.SLP_VECTORIZE
    _numba_config.SLP_VECTORIZE = 1
    try:
        return njit([_tile_signature(dtype)], nogil=True, fastmath={"contract"}, cache=True)(
            ns[f"_tile_{P}x{Q}"])
    finally:
        _numba_config.SLP_VECTORIZE = old


_tile32 = _compile_tile(np.float32)
_tile64 = _compile_tile(np.float64)


def _tile(a, pa, a1, sa, n2, b, b1, bs, acc):
    """The micro-kernel of a's dtype, chosen when numba compiles the caller (overload below)."""
    raise NotImplementedError("called from numba-compiled code only")


@overload(_tile, jit_options={"cache": True, "nogil": True})
def _tile_for_dtype(a, pa, a1, sa, n2, b, b1, bs, acc):
    return (lambda a, pa, a1, sa, n2, b, b1, bs, acc: _tile32(a, pa, a1, sa, n2, b, b1, bs, acc)) \
        if a.dtype == numba.float32 else \
        (lambda a, pa, a1, sa, n2, b, b1, bs, acc: _tile64(a, pa, a1, sa, n2, b, b1, bs, acc))


# ------------------------------------------------------------------------------------------------
# Image -> padded buffer in channel blocks; the forward (and stride-1 input gradient) over images
# ------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _channel_blocks(x, n, p, B, out, c0, c1):
    """out[c // B, (h+p)*Wp + v+p, c % B] = x[n, c, h, v] for c0 <= c < c1, Wp = W + 2p; out is
    flat, its border and its channels past C stay zero. B = C: one padded NHWC image (the
    forward). B < C (the weight gradient): blocks of B channels, each block's pixels B floats
    apart, so a tile that reads B channels pixel after pixel reads one sequential stream.
    A transpose, channel by channel: x[n, c] is read in order, the writes are B floats apart
    (faster than row by row 8 channels at a time, as this was, see the module docstring)."""
    H, W = x.shape[2], x.shape[3]
    Wp = W + 2 * p
    S = (H + 2 * p) * Wp  # padded pixels per block
    for c in range(c0, c1):
        base = (c // B) * S * B + c % B
        for h in range(H):
            r = base + ((h + p) * Wp + p) * B
            for v in range(W):
                out[r + v * B] = x[n, c, h, v]


@njit(cache=True, nogil=True)
def _forward_images(x, n0, n1, wpk, b, kh, kw, s, p, P, Q, y):
    """y[n] (Cout, Ho*Wo), NCHW, for n0 <= n < n1: y[n, o, m] = b[o] + sum_{i,j,c}
    pad[(s*h + i)*Wp + s*v + j, c] * w[o, c, i, j], m = h*Wo + v.

    x (N,C,H,W); wpk (Cout/Q, kh*kw*C*Q) the weights packed in blocks of Q output channels,
    wpk[ob, (t*C + c)*Q + q] = w[ob*Q + q, c, i, j], t = i*kw + j; y (N, Cout, Ho*Wo)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Cout, M = y.shape[1], y.shape[2]
    Wp = W + 2 * p
    Wo = (W + 2 * p - kw) // s + 1
    T = kh * kw
    pad = np.zeros((H + 2 * p) * Wp * C, dtype=x.dtype)  # one image, NHWC, flat; border 0
    toff = np.empty(T, dtype=U)  # where tap (i, j) starts, relative to a pixel's corner
    b1 = np.empty(T, dtype=U)  # where tap t's weights start in a packed panel
    for i in range(kh):
        for j in range(kw):
            toff[i * kw + j] = (i * Wp + j) * C
            b1[i * kw + j] = (i * kw + j) * C * Q
    nt = -(-M // P)  # pixel tiles per image; the last one may be partial
    pa = np.empty((nt, P), dtype=U)  # each tile's pixels: offsets of their top-left corners in pad
    for mt in range(nt):
        for k in range(P):
            m = min(mt * P + k, M - 1)  # past the image's end: repeat the last pixel (dropped)
            pa[mt, k] = (s * (m // Wo) * Wp + s * (m % Wo)) * C
    acc = np.empty((P, Q), dtype=x.dtype)  # P,Q
    for n in range(n0, n1):
        _channel_blocks(x, n, p, C, pad, 0, C)  # NHWC: one block of all C channels
        for ob in range(wpk.shape[0]):  # one weight panel (T*C*Q) at a time, over all pixels
            for mt in range(nt):
                m0 = mt * P
                acc[:] = 0
                _tile(pad, pa[mt], toff, U(1), C, wpk[ob], b1, U(Q), acc)
                for q in range(min(Q, Cout - ob * Q)):
                    o = ob * Q + q
                    for k in range(min(P, M - m0)):
                        y[n, o, m0 + k] = acc[k, q] + b[o]


# ------------------------------------------------------------------------------------------------
# Weight gradient: dw[t] (C, Cout) = sum over the batch of x_tap^T dy, a direct reduction
# ------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _weight_grad_groups(x, dy, g0, g1, kh, kw, s, p, P, Q, dwp):
    """dwp[t, cb, ob, k, q] = sum_{n,h,v} x_pad[n, c, s*h + i, s*v + j] dy[n, o, h, v] for the
    tile groups g0 <= g < g1, g = cb*(Coutp/Q) + ob, c = cb*P + k, o = ob*Q + q, t = i*kw + j.
    x (N,C,H,W), dy (N,Cout,Ho,Wo); dwp (T, Cp/P, Coutp/Q, P, Q) zeroed, each [t, cb, ob] one
    tile's accumulators (C and Cout rounded up to multiples of P and Q; the extra rows and
    columns are scratch).
    Image by image, the blocks these groups read are copied (x in blocks of P channels, dy in
    blocks of Q, see _channel_blocks; they stay in this core's cache), then every group's tiles
    run over the whole image. Each sum runs over n, then the pixels (h, v), in order: one order
    for any split of the groups, so dw does not depend on how many threads share them."""
    N, C, H, W = x.shape
    Cout, Ho, Wo = dy.shape[1], dy.shape[2], dy.shape[3]
    Wp = W + 2 * p
    S = (H + 2 * p) * Wp  # padded pixels of one image
    M = Ho * Wo
    ncb, nob = dwp.shape[1], dwp.shape[2]
    cb0, cb1 = g0 // nob, (g1 - 1) // nob + 1  # the channel blocks these groups read
    ob0, ob1 = (g0 % nob, (g1 - 1) % nob + 1) if cb1 - cb0 == 1 else (0, nob)  # and dy's blocks
    xb = np.zeros(ncb * S * P, dtype=x.dtype)  # one image in blocks of P channels (Cp/P, S, P)
    dyb = np.zeros(nob * M * Q, dtype=x.dtype)  # its dy in blocks of Q channels (Coutp/Q, M, Q)
    a1 = np.empty(Ho, dtype=U)  # where output row h's pixels start in a block of xb
    for h in range(Ho):
        a1[h] = s * h * Wp * P
    b1 = np.empty((nob, Ho), dtype=U)  # where output row h of block ob starts in dyb
    for ob in range(nob):
        for h in range(Ho):
            b1[ob, h] = (ob * M + h * Wo) * Q
    pa = np.empty(P, dtype=U)
    for n in range(N):
        _channel_blocks(x, n, p, P, xb, cb0 * P, min(C, cb1 * P))
        _channel_blocks(dy, n, 0, Q, dyb, ob0 * Q, min(Cout, ob1 * Q))
        for g in range(g0, g1):  # one tile per (channel block, output block, tap), over the
            cb, ob = g // nob, g % nob  # whole image: two sequential streams, xb's cb, dyb's ob
            for i in range(kh):
                for j in range(kw):
                    for k in range(P):  # channels past C read xb's zeros (dropped)
                        pa[k] = (cb * S + i * Wp + j) * P + k
                    _tile(xb, pa, a1, U(s * P), Wo, dyb, b1[ob], U(Q), dwp[i * kw + j, cb, ob])


def _pack_weights(w, Q):
    """w (Cout,Cin,kh,kw) -> (Coutp/Q, kh*kw*Cin*Q), zero-filled past Cout (Coutp = Cout rounded
    up to a multiple of Q): block ob holds w[ob*Q + q, c, i, j] at ((i*kw + j)*Cin + c)*Q + q.
    One copy a block, from a (kh, kw, Cin, Cout) view: 0.62 -> 0.14 ms for a (128,128,3,3) w
    against one transposing copy of the whole (one-off script, medians of 51 interleaved calls;
    it runs in every forward and input gradient, 124 times a UNet step)."""
    Cout, C, kh, kw = w.shape
    nb = -(-Cout // Q)
    wt = w.transpose(2, 3, 1, 0)  # kh,kw,C,Cout (a view)
    out = np.empty((nb, kh, kw, C, Q), dtype=w.dtype)  # Coutp/Q,kh,kw,C,Q
    for ob in range(nb):
        q1 = min(Q, Cout - ob * Q)
        out[ob, ..., :q1] = wt[..., ob * Q:ob * Q + q1]
        out[ob, ..., q1:] = 0
    return out.reshape(nb, -1)


def _conv(x, w, b, stride, padding, Ho, Wo):
    """y (N,Cout,Ho,Wo) = b + the convolution of x (N,C,H,W) with w (Cout,C,kh,kw)."""
    N = x.shape[0]
    Cout, _, kh, kw = w.shape
    P, Q = TILE[x.dtype]
    y = np.empty((N, Cout, Ho * Wo), dtype=x.dtype)  # N,Cout,HoWo
    b = np.zeros(Cout, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    wpk = _pack_weights(w, Q)  # Cout/Q, T*C*Q
    _run(lambda n0, n1: _forward_images(x, n0, n1, wpk, b, kh, kw, stride, padding, P, Q, y),
         _split(N))
    return y.reshape(N, Cout, Ho, Wo)


# ------------------------------------------------------------------------------------------------
# The three public functions (signatures as in kernels/conv2d.py)
# ------------------------------------------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, padding=0):
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    if _pointwise.applies(w.shape, stride, padding):  # 1x1: one BLAS product per image
        return _pointwise.forward(x, w.astype(dtype, copy=False), b)
    return _conv(x, w.astype(dtype, copy=False), b, stride, padding, Ho, Wo)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    Cout, C, kh, kw = w.shape
    check_shapes(x_shape, w.shape, stride, padding)
    if _pointwise.applies(w.shape, stride, padding):
        dtype = np.result_type(dy.dtype, w.dtype)
        return _pointwise.backward_input(np.ascontiguousarray(dy, dtype=dtype),
                                         w.astype(dtype, copy=False))
    q = flipped_padding(kh, kw, stride, padding)
    if q is None:  # stride > 1 (or p > k-1, or a non-square kernel): the "numba" col2im path
        from . import _conv2d_numba
        return _conv2d_numba.conv2d_backward_input(dy, w, x_shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    w_flip = w.astype(dtype, copy=False)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,kh,kw
    # stride 1: dx is dy (padded by q = k-1-p) convolved with the flipped, transposed kernel
    return _conv(dy, w_flip, None, 1, q, x_shape[2], x_shape[3])


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    Cout, C, kh, kw = w_shape
    check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    if _pointwise.applies(w_shape, stride, padding):
        return _pointwise.backward_weight(dy, x)
    if _small_dw.applies(w_shape, dy.shape[2] * dy.shape[3]):  # 8x8: columns and BLAS
        return _small_dw.backward_weight(dy, x, w_shape, stride, padding)
    P, Q = TILE[np.dtype(dtype)]
    ncb, nob = -(-C // P), -(-Cout // Q)
    dwp = np.zeros((kh * kw, ncb, nob, P, Q), dtype=dtype)  # T,Cp/P,Coutp/Q,P,Q: the sums
    _run(lambda g0, g1: _weight_grad_groups(x, dy, g0, g1, kh, kw, stride, padding, P, Q, dwp),
         _split(ncb * nob, _threads.THREADS))  # one chunk of tiles per thread, each over the whole batch:
    # each chunk copies every image's blocks it reads (dy's, all of them), so more chunks copy
    # more (4 or 8 chunks on 2 threads: up to 45% slower at 32x32)
    dwp = dwp.transpose(0, 1, 3, 2, 4).reshape(kh * kw, ncb * P, nob * Q)  # T,Cp,Coutp
    dw = dwp[:, :C, :Cout].reshape(kh, kw, C, Cout).transpose(3, 2, 0, 1)  # Cout,Cin,kh,kw
    db = dy.sum(axis=(0, 2, 3))  # Cout
    return np.ascontiguousarray(dw), db
