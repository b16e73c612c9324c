// CUDA C on the CPU, for tests: the shim that tests/cuda_emu.py compiles every kernel source with.
//
// A launch runs the blocks one after another. Inside a block, every CUDA thread is a fiber
// (ucontext for its stack, _setjmp/_longjmp to switch) on the one OS thread of the launch: a fiber runs until it reaches a barrier
// (__syncthreads, __syncwarp, a warp shuffle) or returns, then the next fiber runs. A barrier opens
// when every thread of its scope (block, or warp) that has not returned waits at it (exited
// threads do not count, as on Volta and later GPUs; every __syncthreads is the one block barrier,
// as in hardware). The warps take turns: one runs, through its warp barriers, until it waits at
// __syncthreads (or returns), then the next. When nothing can run and some thread has not returned, the launch stops with
// "barrier deadlock" (lanes of one warp split between a warp barrier and __syncthreads: undefined
// behaviour on a GPU, a hang or garbage there). So a kernel that
// is correct only with its barriers, and whose threads share data only through them, computes
// here what it computes on a GPU, up to floating-point contraction (nvcc fuses a*b+c into an FMA
// by default; this shim compiles with -ffp-contract=off, so tests compare within a tolerance).
//
// What is emulated: threadIdx, blockIdx, blockDim, gridDim (unsigned, as in CUDA), warpSize,
// __shared__ (static and `extern __shared__ T name[];` dynamic memory, rewritten by cuda_emu.py;
// the dynamic memory starts every block filled with 0xff bytes, a nan in every float (0x7f bytes
// in the descending order), so a read of a value no thread wrote shows),
// __syncthreads, __syncwarp, __shfl_sync / __shfl_down_sync / __shfl_up_sync / __shfl_xor_sync
// (all 32 lanes, blockDim a multiple of 32), atomicAdd / atomicMax on int and float (one OS thread:
// plain read-modify-write), __ldg, the float math intrinsics, float2 / float4 / int2 / int4 / dim3.
// The shim's own names (emu::..., emu_current_launch_, __emu_*) must not be #defined by a kernel.
// What is not: memory spaces (any pointer is host memory), texture and cooperative groups, and
// races as such: fibers never interleave between barriers, so a race a GPU would show stays
// hidden in one run. What shows many of them: the schedule order (emu::descending, set by
// cuda_emu.py's EmulatedModule.order). Ascending, the warps of a block take their turns in order,
// the lanes of a warp in order, and the blocks run in grid order; descending, all three in reverse. A kernel
// whose threads share data only through its barriers (and whose blocks not at all) computes the
// same bits either way; one where a thread reads what another writes in the same stretch (a
// missing __syncthreads), or a block reads another block's output, sees the old value in one
// order and the new in the other.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <type_traits>
#include <utility>
#include <tuple>
#include <vector>
#include <csetjmp>
#include <ucontext.h>

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct int2 { int x, y; };
struct int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

#define __global__
#define __device__ inline
#define __host__
#define __forceinline__
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static
#define __align__(n) alignas(n)

namespace emu {
enum State { READY, WAIT_BLOCK, WAIT_WARP, DONE };
struct Fiber {
    ucontext_t ctx;  // the fresh context of a thread that has not run yet
    std::jmp_buf jb;  // where a waiting thread resumes
    bool started;
    uint3 tid;
    int lane, warp;
    State state;
};
struct Launch {
    Fiber* fibers;
    int nthreads;
    std::jmp_buf scheduler;
    Fiber* current;
    uint3 block, grid_dim;
    dim3 block_dim;
    unsigned long long shfl[1024];  // one 8-byte slot per thread for warp shuffles
    unsigned char* dynamic_smem;
    char* stacks;  // one STACK-byte stack per thread
};
constexpr std::size_t STACK = 64 * 1024;
inline thread_local Launch* emu_current_launch_ = nullptr;
inline bool descending = false;  // the schedule order (see the top of this file)

inline void wait(State s) {
    Fiber* f = emu_current_launch_->current;
    f->state = s;
    if (!_setjmp(f->jb)) _longjmp(emu_current_launch_->scheduler, 1);  // back to the scheduler; resumes here
}
}  // namespace emu

#define threadIdx (emu::emu_current_launch_->current->tid)
#define blockIdx (emu::emu_current_launch_->block)
#define blockDim (emu::emu_current_launch_->block_dim)
#define gridDim (emu::emu_current_launch_->grid_dim)
#define warpSize 32
#define __emu_dynamic_smem (emu::emu_current_launch_->dynamic_smem)

inline void __syncthreads() { emu::wait(emu::WAIT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::WAIT_WARP); }

template <typename T, typename F>
inline T __emu_shuffle(T v, F source_lane) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    emu::Fiber* f = emu::emu_current_launch_->current;
    const int me = int(f - emu::emu_current_launch_->fibers);
    std::memcpy(&emu::emu_current_launch_->shfl[me], &v, sizeof(T));
    __syncwarp();
    const int src = source_lane(f->lane);
    T out = v;  // a lane outside the warp reads its own value, as on the GPU
    if (src >= 0 && src < 32) std::memcpy(&out, &emu::emu_current_launch_->shfl[me - f->lane + src], sizeof(T));
    __syncwarp();
    return out;
}
template <typename T> inline T __shfl_sync(unsigned, T v, int src, int = 32) {
    return __emu_shuffle(v, [&](int) { return src & 31; });
}
template <typename T> inline T __shfl_down_sync(unsigned, T v, unsigned d, int = 32) {
    return __emu_shuffle(v, [&](int lane) { return lane + int(d) < 32 ? lane + int(d) : lane; });
}
template <typename T> inline T __shfl_up_sync(unsigned, T v, unsigned d, int = 32) {
    return __emu_shuffle(v, [&](int lane) { return lane - int(d) >= 0 ? lane - int(d) : lane; });
}
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m, int = 32) {
    return __emu_shuffle(v, [&](int lane) { return lane ^ m; });
}

template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T> inline T atomicMax(T* p, T v) { T old = *p; *p = old > v ? old : v; return old; }
template <typename T> inline T __ldg(const T* p) { return *p; }

using std::min;
using std::max;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }

namespace emu {
struct Entry { void (*run)(void*); void* data; };
inline thread_local Entry entry;
inline void trampoline() {
    entry.run(entry.data);
    emu_current_launch_->current->state = DONE;
    _longjmp(emu_current_launch_->scheduler, 1);  // this thread's stack is left behind
}

// Run one block to the end; 0 on success, 1 on a barrier deadlock.
inline int run_block(Launch& l) {
    for (int t = 0; t < l.nthreads; ++t) {
        Fiber& f = l.fibers[t];
        f.state = READY;
        f.started = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = l.stacks + STACK * t;  // fresh stacks for every block
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
    }
    const int nwarps = (l.nthreads + 31) / 32;
    for (;;) {
        // Each warp in turn (the schedule order) runs until every live lane of it waits at the
        // block barrier or has returned: its lanes in turn up to their next barrier, its warp
        // barrier (__syncwarp, a shuffle) opened as soon as every live lane of the warp waits
        // there. So warps interleave only at __syncthreads, as far apart as a GPU may run them.
        bool progressed = false;
        for (int wi = 0; wi < nwarps; ++wi) {
            const int w = descending ? nwarps - 1 - wi : wi;
            const int first = w * 32, last = std::min(l.nthreads, first + 32);
            for (;;) {
                bool ran = false;
                for (int i = first; i < last; ++i) {
                    const int t = descending ? first + last - 1 - i : i;
                    if (l.fibers[t].state != READY) continue;
                    ran = true;
                    Fiber& f = l.fibers[t];
                    l.current = &f;
                    // Switch with _setjmp/_longjmp (no system call); only a thread's first start
                    // goes through setcontext, onto its own stack.
                    if (!_setjmp(l.scheduler)) {
                        if (!f.started) {
                            f.started = true;
                            setcontext(&f.ctx);
                        }
                        _longjmp(f.jb, 1);
                    }
                }
                if (ran) {
                    progressed = true;
                    continue;
                }
                bool warp_all = true, warp_live = false;
                for (int t = first; t < last; ++t) {
                    const State s = l.fibers[t].state;
                    if (s == DONE) continue;
                    warp_live = true;
                    if (s != WAIT_WARP) warp_all = false;
                }
                if (!(warp_live && warp_all)) break;  // at the block barrier, returned, or stuck
                for (int t = first; t < last; ++t)
                    if (l.fibers[t].state == WAIT_WARP) l.fibers[t].state = READY;
                progressed = true;
            }
        }
        if (progressed) continue;
        // No warp can move: open the block barrier if every live thread waits at it.
        bool live = false, all_block = true;
        for (int t = 0; t < l.nthreads; ++t) {
            const State s = l.fibers[t].state;
            if (s == DONE) continue;
            live = true;
            if (s != WAIT_BLOCK) all_block = false;
        }
        if (!live) return 0;
        if (!all_block) return 1;
        for (int t = 0; t < l.nthreads; ++t)
            if (l.fibers[t].state == WAIT_BLOCK) l.fibers[t].state = READY;
    }
}

// Launch `kernel` over grid x block, its arguments read from args[i] (pointers to each value, as
// cuLaunchKernel takes them). Returns 0, or 1 (barrier deadlock, message on stderr).
template <typename... A>
inline int launch(const char* name, void (*kernel)(A...), const unsigned* g, const unsigned* b,
                  std::size_t smem, void** args) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
        std::tuple<std::decay_t<A>...> values{*static_cast<std::decay_t<A>*>(args[I])...};
        Launch l{};
        l.nthreads = int(b[0] * b[1] * b[2]);
        if (l.nthreads < 1 || l.nthreads > 1024) {
            std::fprintf(stderr, "%s: %d threads per block (1 to 1024)\n", name, l.nthreads);
            return 2;
        }
        l.block_dim = dim3(b[0], b[1], b[2]);
        l.grid_dim = {g[0], g[1], g[2]};
        l.fibers = new Fiber[l.nthreads];
        l.stacks = static_cast<char*>(std::malloc(STACK * l.nthreads));
        std::vector<unsigned char> dyn(smem + 16);
        l.dynamic_smem = dyn.data();
        for (int t = 0; t < l.nthreads; ++t) {
            Fiber& f = l.fibers[t];
            f.tid = {unsigned(t % b[0]), unsigned((t / b[0]) % b[1]), unsigned(t / (b[0] * b[1]))};
            f.lane = t % 32;
            f.warp = t / 32;
        }
        Launch* saved = emu_current_launch_;
        emu_current_launch_ = &l;
        struct Closure { void (*k)(A...); std::tuple<std::decay_t<A>...>* v; };
        Closure c{kernel, &values};
        entry = {[](void* p) {
                     auto* c = static_cast<Closure*>(p);
                     std::apply(c->k, *c->v);
                 },
                 &c};
        int rc = 0;
        const unsigned nblocks = g[0] * g[1] * g[2];
        for (unsigned i = 0; i < nblocks && !rc; ++i) {
            const unsigned k = descending ? nblocks - 1 - i : i;  // x fastest, as in CUDA
            const unsigned x = k % g[0], y = k / g[0] % g[1], z = k / (g[0] * g[1]);
            l.block = {x, y, z};
            // garbage, as on a GPU, and another garbage in each order: a float reads nan
            // (ascending) or 3.4e38 (descending), so a read of a value no thread wrote shows
            std::memset(l.dynamic_smem, descending ? 0x7f : 0xff, smem);
            rc = run_block(l);
            if (rc)
                std::fprintf(stderr, "%s: barrier deadlock in block (%u,%u,%u): threads wait at "
                             "different barriers or a shuffle in a partial warp\n", name, x, y, z);
        }
        emu_current_launch_ = saved;
        std::free(l.stacks);
        delete[] l.fibers;
        return rc;
    }(std::index_sequence_for<A...>{});
}

// Each parameter as one character: 'p' pointer, 'f' float, 'd' double, 'i' int32, 'u' uint32,
// 'l' int64, 'emu_current_launch_' uint64; pointers add the pointee's size and kind, e.g. "p4f" for float*.
template <typename T> inline void describe_one(char*& out) {
    using U = std::decay_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        using P = std::remove_cv_t<std::remove_pointer_t<U>>;
        *out++ = 'p';
        *out++ = char('0' + sizeof(P));
        *out++ = std::is_floating_point_v<P> ? 'f' : (std::is_signed_v<P> ? 'i' : 'u');
    } else if constexpr (std::is_same_v<U, float>) { *out++ = 'f'; }
    else if constexpr (std::is_same_v<U, double>) { *out++ = 'd'; }
    else if constexpr (std::is_integral_v<U> && sizeof(U) == 4) { *out++ = std::is_signed_v<U> ? 'i' : 'u'; }
    else if constexpr (std::is_integral_v<U> && sizeof(U) == 8) { *out++ = std::is_signed_v<U> ? 'l' : 'emu_current_launch_'; }
    else { *out++ = '?'; }
    *out++ = ' ';
}
template <typename... A> inline void describe(void (*)(A...), char* out) {
    (describe_one<A>(out), ...);
    *out = 0;
}
}  // namespace emu
