"""The CUDA C emulator (tests/cuda_emu.py) that checks the CuPy raw kernels without a GPU: it must
get barriers, shared memory, shuffles and argument types right before any kernel test can be
trusted. Each kernel here has an answer NumPy gives independently."""
import numpy as np
import pytest

cuda_emu = pytest.importorskip("cuda_emu")
pytestmark = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")

SOURCE = r'''
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
    // one block per 128 values: tree reduction in shared memory, __syncthreads between levels
    __shared__ float buf[128];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    buf[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

extern "C" __global__ void warp_sum(const float* x, float* out, int n) {
    // per warp with shuffles, then one atomicAdd per warp; dynamic shared memory holds a copy
    extern __shared__ float seen[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    seen[threadIdx.x] = v;
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, v);
}

extern "C" __global__ void reverse_2d(const int* x, int* y, int rows, int cols) {
    // 2-D blocks and grids: y[r, c] = x[r, cols - 1 - c] through a shared tile
    __shared__ int tile[4][8];
    const int c = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y * blockDim.y + threadIdx.y;
    if (r < rows && c < cols) tile[threadIdx.y][threadIdx.x] = x[r * cols + c];
    __syncthreads();
    if (r < rows && c < cols) y[r * cols + (cols - 1 - c)] = tile[threadIdx.y][threadIdx.x];
}

extern "C" __global__ void early_exit(float* x, float* y) {
    if (threadIdx.x >= 16) return;
    x[threadIdx.x] = threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = x[15 - threadIdx.x];  // written by another thread before the barrier
}

extern "C" __global__ void shift_racy(const float* x, float* y, int barrier) {
    // y[t] = x[t] + x[t + 1] through shared memory; without the barrier a thread may read its
    // neighbour's slot before the neighbour has written it (a race)
    __shared__ float buf[64];
    const int t = threadIdx.x;
    buf[t] = x[t];
    if (barrier) __syncthreads();
    y[t] = buf[t] + (t + 1 < 64 ? buf[t + 1] : 0.0f);
}

extern "C" __global__ void chain_blocks(float* x) {
    // block b adds block b - 1's first value to its own: blocks sharing data through global memory
    if (threadIdx.x == 0 && blockIdx.x > 0) x[blockIdx.x * 32] += x[(blockIdx.x - 1) * 32];
}

extern "C" __global__ void divergent(float* x) {
    // half a warp at a shuffle, the other half at __syncthreads: neither can ever open
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
    else __syncthreads();
    x[threadIdx.x] = v;
}
'''


@pytest.fixture(scope="module")
def mod():
    return cuda_emu.EmulatedModule(SOURCE)


def test_block_reduction_with_barriers(mod):
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)  # n
    out = np.zeros(8, np.float32)  # blocks
    mod.get_function("block_sum")((8,), (128,), (x, out, np.int32(x.size)))
    want = np.pad(x, (0, 24)).reshape(8, 128).sum(1, dtype=np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)  # float32 sums of 128 values


def test_warp_shuffles_atomics_and_dynamic_shared(mod):
    x = np.random.default_rng(1).standard_normal(300).astype(np.float32)
    out = np.zeros(1, np.float32)
    mod.get_function("warp_sum")((3,), (128,), (x, out, np.int32(x.size)), shared_mem=128 * 4)
    np.testing.assert_allclose(out[0], x.sum(dtype=np.float64), rtol=1e-5, atol=1e-4)


def test_2d_blocks_and_grid(mod):
    x = np.arange(5 * 19, dtype=np.int32).reshape(5, 19)
    y = np.zeros_like(x)
    mod.get_function("reverse_2d")((3, 2), (8, 4), (x, y, np.int32(5), np.int32(19)))
    np.testing.assert_array_equal(y, x[:, ::-1])


def test_exited_threads_do_not_hold_a_barrier(mod):
    # threads 16..31 return before the barrier; the others pass it (Volta and later GPUs agree)
    x, y = np.zeros(32, np.float32), np.zeros(32, np.float32)
    mod.get_function("early_exit")((1,), (32,), (x, y))
    np.testing.assert_array_equal(y, np.r_[np.arange(15, -1, -1), np.zeros(16)])


def test_deadlock_is_an_error_not_a_hang(mod):
    with pytest.raises(RuntimeError, match="divergent"):
        mod.get_function("divergent")((1,), (32,), (np.zeros(32, np.float32),))


def test_argument_types_are_checked(mod):
    k = mod.get_function("block_sum")
    x, out = np.zeros(4, np.float32), np.zeros(1, np.float32)
    with pytest.raises(TypeError, match="np.int32"):
        k((1,), (128,), (x, out, 4))  # a Python int for an int parameter
    with pytest.raises(TypeError, match="float64"):
        k((1,), (128,), (x.astype(np.float64), out, np.int32(4)))
    with pytest.raises(TypeError, match="contiguous"):
        k((1,), (128,), (np.zeros(8, np.float32)[::2], out, np.int32(4)))
    with pytest.raises(TypeError, match="3 arguments"):
        k((1,), (128,), (x, out))


def test_nvcc_accepts_the_same_source():
    try:
        ptx = cuda_emu.nvcc_ptx(SOURCE)
    except RuntimeError as e:  # pragma: no cover - a real failure shows nvcc's message
        pytest.fail(str(e))
    if ptx is None:
        pytest.skip("nvcc not installed")
    assert ".entry block_sum" in ptx and ".entry warp_sum" in ptx


def test_the_descending_schedule_reveals_races(mod):
    """With its barrier the shifted sum is right in both schedule orders and assert_race_free
    passes; without it the two orders differ (and neither need be right), and so do two orders
    of blocks that read each other's output."""
    x = np.arange(64, dtype=np.float32)
    want = x + np.append(x[1:], 0)

    def shifted(barrier, scale=1.0):
        y = np.zeros(64, np.float32)
        mod.get_function("shift_racy")((1,), (64,), (x * np.float32(scale), y, np.int32(barrier)))
        return y

    assert np.array_equal(cuda_emu.assert_race_free(mod, lambda: shifted(1)), want)
    # (static shared memory keeps the last launch's values: a new input makes them stale)
    with pytest.raises(AssertionError, match="race"):
        cuda_emu.assert_race_free(mod, lambda: shifted(0, scale=3.0))

    def chained():
        v = np.ones(4 * 32, np.float32)
        mod.get_function("chain_blocks")((4,), (32,), (v,))
        return v
    with pytest.raises(AssertionError, match="race"):
        cuda_emu.assert_race_free(mod, chained)
    assert mod.order == "ascending"  # put back after each check
    mod.order = "sideways"
    with pytest.raises(ValueError, match="order"):
        shifted(1)
    mod.order = "ascending"
