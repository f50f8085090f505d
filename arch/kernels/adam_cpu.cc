// One optimizer update of every parameter array as one XLA FFI custom call
// (train/cpu_optimizer.py): optax's clip_by_global_norm -> [add_decayed_weights] ->
// scale_by_adam -> [add_decayed_weights] -> scale_by_learning_rate -> apply_updates, and the
// parameters' exponential moving average, over the n arrays of a model at once. XLA runs those
// as five to eight small ops per array (1,864 ops a step for the UNet's 220 arrays,
// docs/speed_kernels.md item 15); here they are two passes over the arrays, cut into blocks on
// XLA's intra-op threads.
//
// Operands: hyper (f32[11], below), then the n gradients, n parameters, n first and n second
// moments and, with `average`, n averages. Results: the n new parameters, moments (and
// averages), then norms (f32[3]): the gradients' global L2 norm before clipping, the update's
// and the new parameters'. Sums of squares are taken per block and added in block order in
// float64: the result does not depend on the threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cpu_vector.h"
#include "xla/ffi/api/ffi.h"
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

using namespace strata;  // NOLINT: the vector helpers

constexpr int64_t kBlock = 16384;  // elements a task: 64 KiB of each array

// hyper's entries, computed in JAX as optax computes them (so the constants round as there)
enum Hyper {
  kB1, kOneMinusB1, kB2, kOneMinusB2, kEps, kEpsRoot, kCorrection1, kCorrection2, kStep,
  kAverageWeight,  // the old average's weight w (the new parameters get 1 - w, kAverageRest)
  kAverageRest, kCount
};

struct Task {
  int64_t array, begin, end;
};

struct Arrays {
  std::vector<const float*> grad, param, mu, nu, average;
  std::vector<float*> new_param, new_mu, new_nu, new_average;
};

double SumSquares(const float* x, int64_t n) {
  vf a0{}, a1{};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    vf x0 = Load(x + i), x1 = Load(x + i + kLanes);
    a0 += x0 * x0;
    a1 += x1 * x1;
  }
  a0 += a1;
  double s = 0.0;
  for (int k = 0; k < kLanes; ++k) s += a0[k];
  for (; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

inline float SqrtOf(float x) { return std::sqrt(x); }
inline vf SqrtOf(vf x) {
#if defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  vf r;
  for (int k = 0; k < kLanes; ++k) r[k] = std::sqrt(x[k]);
  return r;
#endif
}

struct Settings {
  float h[kCount];
  float clip;         // the gradients' factor's numerator (max_norm), or 0: no clipping
  float norm;         // the gradients' global norm (the factor's denominator)
  float decay;        // weight decay on arrays whose mask is 1
  bool decoupled;     // AdamW (after the moments) or L2 (added to the gradient before them)
};

// The update of elements [b, e) of array a; returns (sum of update^2, sum of new param^2).
template <bool kDecay, bool kAverage>
std::pair<double, double> Update(const Arrays& t, const Settings& s, int64_t a, int64_t b,
                                 int64_t e) {
  const float* g = t.grad[a];
  const float* p = t.param[a];
  const float* m = t.mu[a];
  const float* v = t.nu[a];
  float *np = t.new_param[a], *nm = t.new_mu[a], *nv = t.new_nu[a];
  const float* avg = kAverage ? t.average[a] : nullptr;
  float* navg = kAverage ? t.new_average[a] : nullptr;
  const float* h = s.h;
  // one element (a float or a vector of them): optax's operations in optax's order (the
  // compiler may fuse a multiply and an add, as XLA:CPU's may)
  auto one = [&](auto gi, auto pi, auto mi, auto vi, auto ai, auto& ui, auto& npi, auto& nmi,
                 auto& nvi, auto& nai) {
    if (s.clip > 0.0f) gi = (gi / s.norm) * s.clip;
    if (kDecay && !s.decoupled) gi = gi + s.decay * pi;
    nmi = h[kOneMinusB1] * gi + h[kB1] * mi;
    nvi = h[kOneMinusB2] * (gi * gi) + h[kB2] * vi;
    auto mh = nmi / h[kCorrection1], vh = nvi / h[kCorrection2];
    ui = mh / (SqrtOf(vh + h[kEpsRoot]) + h[kEps]);
    if (kDecay && s.decoupled) ui = ui + s.decay * pi;
    ui = h[kStep] * ui;
    npi = pi + ui;
    if (kAverage) nai = h[kAverageWeight] * ai + h[kAverageRest] * npi;
  };
  vf su{}, sp{};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    vf u, npv, nmv, nvv, nav, av = kAverage ? Load(avg + i) : vf{};
    one(Load(g + i), Load(p + i), Load(m + i), Load(v + i), av, u, npv, nmv, nvv, nav);
    Store(np + i, npv);
    Store(nm + i, nmv);
    Store(nv + i, nvv);
    if (kAverage) Store(navg + i, nav);
    su += u * u;
    sp += npv * npv;
  }
  double du = 0.0, dp = 0.0;
  for (int k = 0; k < kLanes; ++k) du += su[k], dp += sp[k];
  for (; i < e; ++i) {
    float u, npv, nmv, nvv, nav, av = kAverage ? avg[i] : 0.0f;
    one(g[i], p[i], m[i], v[i], av, u, npv, nmv, nvv, nav);
    np[i] = npv, nm[i] = nmv, nv[i] = nvv;
    if (kAverage) navg[i] = nav;
    du += static_cast<double>(u) * u;
    dp += static_cast<double>(npv) * npv;
  }
  return {du, dp};
}

ffi::Error AdamUpdate(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, float max_norm, float weight_decay,
                      int64_t decoupled, int64_t average, ffi::Span<const int64_t> decay) {
  const int64_t n = static_cast<int64_t>(decay.size());
  const int64_t inputs = average ? 5 : 4;
  if (hyper.element_count() != kCount || static_cast<int64_t>(args.size()) != inputs * n ||
      static_cast<int64_t>(rets.size()) != (inputs - 1) * n + 1)
    return ffi::Error::InvalidArgument("strata_adam_update: expected hyper f32[11], " +
                                       std::to_string(inputs) + " x n operands and " +
                                       std::to_string(inputs - 1) + " x n + 1 results");
  Arrays t;
  std::vector<Task> tasks;
  for (int64_t a = 0; a < n; ++a) {
    auto arg = [&](int64_t k) { return args.get<ffi::Buffer<ffi::F32>>(k * n + a); };
    auto ret = [&](int64_t k) { return rets.get<ffi::Buffer<ffi::F32>>(k * n + a); };
    auto g = arg(0), p = arg(1), m = arg(2), v = arg(3);
    auto np = ret(0), nm = ret(1), nv = ret(2);
    if (!g || !p || !m || !v || !np || !nm || !nv)
      return ffi::Error::InvalidArgument("strata_adam_update: expected float32 arrays");
    const int64_t size = static_cast<int64_t>(g->element_count());
    for (auto* x : {&p.value(), &m.value(), &v.value()})
      if (static_cast<int64_t>(x->element_count()) != size)
        return ffi::Error::InvalidArgument("strata_adam_update: arrays of unequal sizes");
    t.grad.push_back(g->typed_data());
    t.param.push_back(p->typed_data());
    t.mu.push_back(m->typed_data());
    t.nu.push_back(v->typed_data());
    t.new_param.push_back((*np)->typed_data());
    t.new_mu.push_back((*nm)->typed_data());
    t.new_nu.push_back((*nv)->typed_data());
    if (average) {
      auto av = arg(4);
      auto nav = ret(3);
      if (!av || !nav || static_cast<int64_t>(av->element_count()) != size)
        return ffi::Error::InvalidArgument("strata_adam_update: expected float32 averages");
      t.average.push_back(av->typed_data());
      t.new_average.push_back((*nav)->typed_data());
    }
    for (int64_t b = 0; b < size; b += kBlock) tasks.push_back({a, b, std::min(size, b + kBlock)});
  }
  auto norms = rets.get<ffi::Buffer<ffi::F32>>((inputs - 1) * n);
  if (!norms || (*norms)->element_count() != 3)
    return ffi::Error::InvalidArgument("strata_adam_update: expected norms f32[3] last");
  const int64_t count = static_cast<int64_t>(tasks.size());

  std::vector<double> squares(count);
  ParallelFor(pool, count, [&](int64_t i) {
    const Task& k = tasks[i];
    squares[i] = SumSquares(t.grad[k.array] + k.begin, k.end - k.begin);
  });
  double total = 0.0;
  for (double x : squares) total += x;
  Settings s;
  std::copy(hyper.typed_data(), hyper.typed_data() + kCount, s.h);
  s.norm = static_cast<float>(std::sqrt(total));
  // optax: select(norm < max_norm, g, g / norm * max_norm)
  s.clip = (max_norm > 0.0f && !(s.norm < max_norm)) ? max_norm : 0.0f;
  s.decay = weight_decay;
  s.decoupled = decoupled != 0;

  std::vector<std::pair<double, double>> sums(count);
  ParallelFor(pool, count, [&](int64_t i) {
    const Task& k = tasks[i];
    const bool d = weight_decay != 0.0f && decay[k.array];
    sums[i] = d ? (average ? Update<true, true>(t, s, k.array, k.begin, k.end)
                           : Update<true, false>(t, s, k.array, k.begin, k.end))
                : (average ? Update<false, true>(t, s, k.array, k.begin, k.end)
                           : Update<false, false>(t, s, k.array, k.begin, k.end));
  });
  double su = 0.0, sp = 0.0;
  for (auto& [u, p] : sums) su += u, sp += p;
  float* out = (*norms)->typed_data();
  out[0] = s.norm;
  out[1] = static_cast<float>(std::sqrt(su));
  out[2] = static_cast<float>(std::sqrt(sp));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataAdamUpdate, AdamUpdate,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<float>("max_norm")
                                  .Attr<float>("weight_decay")
                                  .Attr<int64_t>("decoupled")
                                  .Attr<int64_t>("average")
                                  .Attr<ffi::Span<const int64_t>>("decay"));
