// GroupNorm and LayerNorm on the CPU as XLA FFI custom calls (arch/cpu_norm.py registers and
// calls them): for each, the forward pass, which also returns the statistics (the mean and the
// reciprocal standard deviation of each normalised set), and the backward pass from them.
// XLA:CPU computes a GroupNorm's forward and backward pass as about 60 small ops and a
// LayerNorm's as about 25 (reductions as reduce-window trees, broadcasts, elementwise fusions;
// a LayerNorm at the character LM's (4096, 96) 1.6x PyTorch's time, docs/speed_kernels.md item
// 13); here each pass is one op, its tasks on XLA's intra-op thread pool. Statistics are two-pass
// (the mean, then the centred squares).
//
// GroupNorm: x, y and their gradients (B, N, C) float32 row-major (N: the positions, channels
// last); scale and bias (C,); mean and rstd (B, G). Group g holds channels [g C/G, (g+1) C/G);
// its sums are in double; each example is one task.
// LayerNorm: x, y and their gradients (R, C); scale and bias (C,); mean and rstd (R,); blocks of
// rows are the tasks.

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
using In = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

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

ffi::Error GroupNormForward(ffi::ThreadPool pool, In x, In scale, In bias, Out y, Out mean,
                            Out rstd, float epsilon) {
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

ffi::Error GroupNormBackward(ffi::ThreadPool pool, In x, In scale, In mean, In rstd, In dy, Out dx,
                             Out dscale, Out dbias) {
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


// rows per task: the parameter gradients' partial sums are one (C,) row per block
constexpr int64_t kBlockRows = 128;  // LayerNorm rows a task

// sum of f(x[j], j) over j < c, vectorised (the tail scalar)
template <typename F, typename F1>
float RowSum(const float* x, int64_t c, const F& f, const F1& f1) {
  vf a{};
  int64_t j = 0;
  for (; j + kLanes <= c; j += kLanes) a += f(Load(x + j), j);
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += a[l];
  for (; j < c; ++j) s += f1(x[j], j);
  return s;
}

ffi::Error LayerNormForward(ffi::ThreadPool pool, In x, In scale, In bias, Out y, Out mean,
                            Out rstd, float epsilon) {
  const int64_t c = static_cast<int64_t>(scale.element_count());
  const int64_t rows = static_cast<int64_t>(mean->element_count());
  if (c == 0 || static_cast<int64_t>(x.element_count()) != rows * c)
    return ffi::Error::InvalidArgument("strata_layer_norm: x is not (rows, scale's size)");
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data();
  float *yp = y->typed_data(), *mp = mean->typed_data(), *rp = rstd->typed_data();
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  ParallelFor(pool, blocks, [&](int64_t block) {
    const int64_t last = std::min(rows, (block + 1) * kBlockRows);
    for (int64_t r = block * kBlockRows; r < last; ++r) {
      const float* xr = xp + r * c;
      const float m = RowSum(xr, c, [](vf v, int64_t) { return v; },
                             [](float v, int64_t) { return v; }) / c;
      const float var = RowSum(xr, c, [m](vf v, int64_t) { v -= m; return v * v; },
                               [m](float v, int64_t) { v -= m; return v * v; }) / c;
      const float rs = 1.0f / std::sqrt(var + epsilon);
      mp[r] = m;
      rp[r] = rs;
      float* yr = yp + r * c;
      int64_t j = 0;
      for (; j + kLanes <= c; j += kLanes)
        Store(yr + j, (Load(xr + j) - m) * rs * Load(sp + j) + Load(bp + j));
      for (; j < c; ++j) yr[j] = (xr[j] - m) * rs * sp[j] + bp[j];
    }
  });
  return ffi::Error::Success();
}

ffi::Error LayerNormBackward(ffi::ThreadPool pool, In x, In scale, In mean, In rstd, In dy, Out dx,
                             Out dscale, Out dbias) {
  const int64_t c = static_cast<int64_t>(scale.element_count());
  const int64_t rows = static_cast<int64_t>(mean.element_count());
  if (c == 0 || static_cast<int64_t>(x.element_count()) != rows * c)
    return ffi::Error::InvalidArgument("strata_layer_norm: x is not (rows, scale's size)");
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *mp = mean.typed_data();
  const float *rp = rstd.typed_data(), *gp = dy.typed_data();
  float* dxp = dx->typed_data();
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  // each block's share of the parameter gradients, added in block order below
  std::vector<float> part_scale(blocks * c, 0.0f), part_bias(blocks * c, 0.0f);
  ParallelFor(pool, blocks, [&](int64_t block) {
    float *ps = part_scale.data() + block * c, *pb = part_bias.data() + block * c;
    const int64_t last = std::min(rows, (block + 1) * kBlockRows);
    for (int64_t r = block * kBlockRows; r < last; ++r) {
      const float *xr = xp + r * c, *gr = gp + r * c;
      const float m = mp[r], rs = rp[r];
      // dxhat = dy * scale, xhat = (x - m) * rs; their means over the row
      const float a = RowSum(gr, c, [sp](vf g, int64_t j) { return g * Load(sp + j); },
                             [sp](float g, int64_t j) { return g * sp[j]; }) / c;
      vf acc{};
      float tail = 0.0f;
      int64_t j = 0;
      for (; j + kLanes <= c; j += kLanes) {
        vf g = Load(gr + j), xh = (Load(xr + j) - m) * rs;
        acc += g * Load(sp + j) * xh;
        Store(ps + j, Load(ps + j) + g * xh);
        Store(pb + j, Load(pb + j) + g);
      }
      for (; j < c; ++j) {
        const float xh = (xr[j] - m) * rs;
        tail += gr[j] * sp[j] * xh;
        ps[j] += gr[j] * xh;
        pb[j] += gr[j];
      }
      for (int l = 0; l < kLanes; ++l) tail += acc[l];
      const float b = tail / c;
      // dx = rs (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
      float* dr = dxp + r * c;
      j = 0;
      for (; j + kLanes <= c; j += kLanes) {
        vf xh = (Load(xr + j) - m) * rs;
        Store(dr + j, (Load(gr + j) * Load(sp + j) - a - xh * b) * rs);
      }
      for (; j < c; ++j) dr[j] = (gr[j] * sp[j] - a - (xr[j] - m) * rs * b) * rs;
    }
  });
  float *dsp = dscale->typed_data(), *dbp = dbias->typed_data();
  std::memcpy(dsp, part_scale.data(), c * sizeof(float));
  std::memcpy(dbp, part_bias.data(), c * sizeof(float));
  for (int64_t i = 1; i < blocks; ++i)
    for (int64_t j = 0; j < c; ++j) {
      dsp[j] += part_scale[i * c + j];
      dbp[j] += part_bias[i * c + j];
    }
  return ffi::Error::Success();
}

// both norms' calls take the same buffers: (x, scale, bias) -> (y, mean, rstd), epsilon; and
// (x, scale, mean, rstd, dy) -> (dx, dscale, dbias)
auto ForwardBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<float>("epsilon");
}

auto BackwardBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataGroupNormForward, GroupNormForward, ForwardBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataGroupNormBackward, GroupNormBackward, BackwardBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataLayerNormForward, LayerNormForward, ForwardBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataLayerNormBackward, LayerNormBackward, BackwardBinding());
