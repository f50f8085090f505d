// Vectors of floats and a parallel loop for the CPU kernels (arch/kernels/*.cc): GCC/Clang
// vector extensions of 16 floats where the build targets AVX-512 (one register) and 8 elsewhere
// (one AVX register; targets without split them), a vectorised exp, and tasks spread over XLA's
// intra-op thread pool.

#ifndef STRATA_KERNELS_CPU_VECTOR_H_
#define STRATA_KERNELS_CPU_VECTOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace strata {

namespace ffi = xla::ffi;

#ifdef __AVX512F__
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

inline int64_t Padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }
inline vf Load(const float* p) { vf x; std::memcpy(&x, p, sizeof x); return x; }
inline void Store(float* p, vf x) { std::memcpy(p, &x, sizeof x); }
inline vf Splat(float x) { return vf{} + x; }

// exp(x) of a vector: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial
// (relative error under 2e-7), 2^n put into the exponent bits. Inputs below -87 give 0.
inline vf Exp(vf x) {
  const vf lo = Splat(-87.0f), hi = Splat(88.0f);
  vf under = x < lo ? Splat(0.0f) : Splat(1.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  vf n = x * 1.44269504088896341f;
  n = __builtin_convertvector(__builtin_convertvector(n + (n < 0 ? Splat(-0.5f) : Splat(0.5f)),
                                                    vi), vf);
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = Splat(1.0f / 720) * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale * under;
}

// Runs body(i) for i in [0, n) on the caller and the pool's threads; returns when all are done.
// Tasks are claimed one at a time, so a helper that starts late (or never) costs nothing.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  // A helper that starts after the last task was claimed never touches `body`, gone by then.
  auto work = [state, n, &body]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    auto copy = work;
    pool.Schedule(std::move(copy));
  }
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace strata

#endif  // STRATA_KERNELS_CPU_VECTOR_H_
