// GroupNorm on the CPU as two XLA FFI custom calls (arch/cpu_norm.py registers and calls them):
// the forward pass, which also returns each (example, group)'s mean and reciprocal standard
// deviation, and the backward pass from them. XLA:CPU computes a GroupNorm's forward and
// backward pass as about 60 small ops (reductions as reduce-window trees, broadcasts,
// elementwise fusions), and the UNet has 25 of them; here each pass is one op, and each example
// is one task on XLA's intra-op thread pool.
//
// Layouts: x, y and their gradients (B, N, C) float32 row-major (N: the positions, channels
// last); scale and bias (C,); mean and rstd (B, G). Group g holds channels [g C/G, (g+1) C/G).
// Statistics are two-pass (the mean, then the centred squares), summed in double per group.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_vector.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace strata;  // NOLINT: the vector helpers

struct Dims {
  int64_t b, n, c, g;
  int64_t per_group() const { return c / g; }
};

// out[j] = sum over rows r < n of f(x[r, j], j) for j < c (rows of c floats), vectorised along
// the channels; `f(vector of x, first channel)` and `f1(x, channel)` for the tail.
template <typename F, typename F1>
void ChannelSums(const float* x, const Dims& d, float* out, const F& f, const F1& f1) {
  int64_t j = 0;
  for (; j + kLanes <= d.c; j += kLanes) {
    vf a{};
    for (int64_t r = 0; r < d.n; ++r) a += f(Load(x + r * d.c + j), j);
    Store(out + j, a);
  }
  for (; j < d.c; ++j) {
    float a = 0.0f;
    for (int64_t r = 0; r < d.n; ++r) a += f1(x[r * d.c + j], j);
    out[j] = a;
  }
}

// per group, the sum of v[j] * w[j] over its channels (w null: 1), in double
void GroupSums(const float* v, const float* w, const Dims& d, double* out) {
  const int64_t k = d.per_group();
  for (int64_t g = 0; g < d.g; ++g) {
    double s = 0.0;
    for (int64_t j = g * k; j < (g + 1) * k; ++j) s += double(v[j]) * (w ? double(w[j]) : 1.0);
    out[g] = s;
  }
}

// y[r, j] = x[r, j] * a[j] + b[j] (and the same with a second input: y = x a + z p + b)
void Affine(const float* x, const float* z, const float* a, const float* p, const float* b,
            const Dims& d, float* y) {
  for (int64_t r = 0; r < d.n; ++r) {
    const float* xr = x + r * d.c;
    const float* zr = z ? z + r * d.c : nullptr;
    float* yr = y + r * d.c;
    int64_t j = 0;
    for (; j + kLanes <= d.c; j += kLanes) {
      vf v = Load(xr + j) * Load(a + j) + Load(b + j);
      if (zr) v += Load(zr + j) * Load(p + j);
      Store(yr + j, v);
    }
    for (; j < d.c; ++j) yr[j] = xr[j] * a[j] + b[j] + (zr ? zr[j] * p[j] : 0.0f);
  }
}

ffi::Error Check(const Dims& d) {
  if (d.g <= 0 || d.c % d.g)
    return ffi::Error::InvalidArgument("strata_group_norm: the channels are not a multiple of "
                                       "the groups");
  return ffi::Error::Success();
}

Dims DimsOf(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& stats) {
  auto xd = x.dimensions(), sd = stats.dimensions();
  return Dims{xd[0], xd[1], xd[2], sd[1]};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                   ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y,
                   ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> rstd,
                   float epsilon) {
  auto xd = x.dimensions();
  Dims d{xd[0], xd[1], xd[2], mean->dimensions()[1]};
  if (ffi::Error e = Check(d); e.failure()) return e;
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data();
  float *yp = y->typed_data(), *mp = mean->typed_data(), *rp = rstd->typed_data();
  const double count = double(d.n * d.per_group());
  ParallelFor(pool, d.b, [&](int64_t i) {
    const float* xi = xp + i * d.n * d.c;
    std::vector<float> sums(d.c), centre(d.c), a(d.c), shift(d.c);
    std::vector<double> group(d.g);
    ChannelSums(xi, d, sums.data(), [](vf v, int64_t) { return v; },
                [](float v, int64_t) { return v; });
    GroupSums(sums.data(), nullptr, d, group.data());
    for (int64_t j = 0; j < d.c; ++j) centre[j] = float(group[j / d.per_group()] / count);
    const float* m = centre.data();
    ChannelSums(xi, d, sums.data(), [m](vf v, int64_t j) { v -= Load(m + j); return v * v; },
                [m](float v, int64_t j) { v -= m[j]; return v * v; });
    GroupSums(sums.data(), nullptr, d, group.data());
    for (int64_t g = 0; g < d.g; ++g) {
      mp[i * d.g + g] = centre[g * d.per_group()];
      rp[i * d.g + g] = float(1.0 / std::sqrt(group[g] / count + double(epsilon)));
    }
    for (int64_t j = 0; j < d.c; ++j) {
      a[j] = rp[i * d.g + j / d.per_group()] * sp[j];
      shift[j] = bp[j] - centre[j] * a[j];
    }
    Affine(xi, nullptr, a.data(), nullptr, shift.data(), d, yp + i * d.n * d.c);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                    ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd,
                    ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx,
                    ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dbias) {
  Dims d = DimsOf(x, mean);
  if (ffi::Error e = Check(d); e.failure()) return e;
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *mp = mean.typed_data();
  const float *rp = rstd.typed_data(), *gp = dy.typed_data();
  float* dxp = dx->typed_data();
  const double count = double(d.n * d.per_group());
  // each example's share of the parameter gradients, added in example order below
  std::vector<float> part_scale(d.b * d.c), part_bias(d.b * d.c);
  ParallelFor(pool, d.b, [&](int64_t i) {
    const float *xi = xp + i * d.n * d.c, *gi = gp + i * d.n * d.c;
    std::vector<float> centre(d.c), s2(d.c), p(d.c), q(d.c), r(d.c);
    std::vector<double> a(d.g), b(d.g);
    for (int64_t j = 0; j < d.c; ++j) centre[j] = mp[i * d.g + j / d.per_group()];
    float* s1 = part_bias.data() + i * d.c;  // sum of dy over the positions
    ChannelSums(gi, d, s1, [](vf v, int64_t) { return v; }, [](float v, int64_t) { return v; });
    // sum of dy * (x - mean): rows of dy and x side by side
    const float* m = centre.data();
    for (int64_t j = 0; j < d.c; ++j) s2[j] = 0.0f;
    for (int64_t row = 0; row < d.n; ++row) {
      const float *xr = xi + row * d.c, *gr = gi + row * d.c;
      int64_t j = 0;
      for (; j + kLanes <= d.c; j += kLanes)
        Store(s2.data() + j, Load(s2.data() + j) + Load(gr + j) * (Load(xr + j) - Load(m + j)));
      for (; j < d.c; ++j) s2[j] += gr[j] * (xr[j] - m[j]);
    }
    GroupSums(s1, sp, d, a.data());           // sum of dy * scale
    GroupSums(s2.data(), sp, d, b.data());    // sum of dy * scale * (x - mean)
    for (int64_t j = 0; j < d.c; ++j) {
      const int64_t g = j / d.per_group();
      const double rs = rp[i * d.g + g];
      const double mean_dxhat = a[g] / count, mean_dxhat_xhat = b[g] * rs / count;
      part_scale[i * d.c + j] = s2[j] * float(rs);
      // dx = rs (dy scale - mean(dxhat) - xhat mean(dxhat xhat)), xhat = (x - mean) rs
      p[j] = float(rs * sp[j]);
      q[j] = float(-rs * rs * mean_dxhat_xhat);
      r[j] = float(-rs * mean_dxhat + rs * rs * mean_dxhat_xhat * centre[j]);
    }
    Affine(xi, gi, q.data(), p.data(), r.data(), d, dxp + i * d.n * d.c);
  });
  float *dsp = dscale->typed_data(), *dbp = dbias->typed_data();
  std::memcpy(dsp, part_scale.data(), d.c * sizeof(float));
  std::memcpy(dbp, part_bias.data(), d.c * sizeof(float));
  for (int64_t i = 1; i < d.b; ++i)
    for (int64_t j = 0; j < d.c; ++j) {
      dsp[j] += part_scale[i * d.c + j];
      dbp[j] += part_bias[i * d.c + j];
    }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataGroupNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataGroupNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
