// Softmax attention on the CPU as two XLA FFI custom calls (arch/cpu_attention.py builds and
// registers them): the forward pass, which also returns each query's log-sum-exp of its logits,
// and the backward pass, which recomputes the weights from it (FlashAttention-2's scheme, Dao
// 2023). Each (batch, head) pair is one task on XLA's intra-op thread pool, and its keys and
// values stay in the core's cache while every query row is computed against them.
//
// Layouts: q (B, T, N, H), k and v (B, S, N, H), o and the gradients alike, all float32
// row-major; lse and delta (B, N, T). Logits are q.k / sqrt(H); `causal` (T == S) keeps the keys
// at or before each query's position. Rows are padded to a whole number of vectors (cpu_vector.h)
// in local copies.

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

// query rows computed together against each loaded key vector (as many registers as fit)
constexpr int kRows = kLanes == 16 ? 8 : 4;

// Vectors along the head dimension: 8 floats (head widths are multiples of 8 more often than of
// 16: 24 in the character LM, 40, 56, 72...), padded to a multiple of 8 (AVX-512's 16 would
// pad the LM's 24 to 32, a quarter of the work wasted).
constexpr int kCols = 8;
typedef float vc __attribute__((vector_size(4 * kCols)));
inline vc LoadC(const float* p) { vc x; std::memcpy(&x, p, sizeof x); return x; }
inline void StoreC(float* p, vc x) { std::memcpy(p, &x, sizeof x); }
inline vc SplatC(float x) { return vc{} + x; }

struct Shape {
  int64_t b, t, s, n, h;
  int64_t hp() const { return (h + kCols - 1) / kCols * kCols; }
  int64_t sp() const { return Padded(s); }
  // where pair i = (batch i / n, head i % n) starts in a (B, T, N, H) and a (B, S, N, H) array
  int64_t queries_at(int64_t i) const { return ((i / n) * t * n + i % n) * h; }
  int64_t keys_at(int64_t i) const { return ((i / n) * s * n + i % n) * h; }
};

// Local copies of one (batch, head) pair's keys or values: rows (Sp, Hp) and transposed (H, Sp),
// zero-padded (the products run over whole vectors of keys).
void CopyRows(const float* x, const Shape& d, float* rows) {
  std::fill(rows, rows + d.sp() * d.hp(), 0.0f);
  for (int64_t j = 0; j < d.s; ++j) std::memcpy(rows + j * d.hp(), x + j * d.n * d.h,
                                                d.h * sizeof(float));
}

void CopyTransposed(const float* x, const Shape& d, float* cols) {
  std::fill(cols, cols + d.h * d.sp(), 0.0f);
  for (int64_t j = 0; j < d.s; ++j)
    for (int64_t c = 0; c < d.h; ++c) cols[c * d.sp() + j] = x[j * d.n * d.h + c];
}

// logits[r][j] = q_r . k_j for kRows query rows q (kRows, Hp) and keys j < keys (a multiple
// of kLanes), from the transposed keys kt (H, Sp).
void Logits(const float* q, const float* kt, const Shape& d, int64_t keys, float* logits) {
  const int64_t sp = d.sp(), hp = d.hp();
  int64_t j = 0;
  for (; j + 2 * kLanes <= keys; j += 2 * kLanes) {
    vf a0[kRows] = {}, a1[kRows] = {};
    for (int64_t c = 0; c < d.h; ++c) {
      vf k0 = Load(kt + c * sp + j), k1 = Load(kt + c * sp + j + kLanes);
      for (int r = 0; r < kRows; ++r) {
        vf qr = Splat(q[r * hp + c]);
        a0[r] += qr * k0;
        a1[r] += qr * k1;
      }
    }
    for (int r = 0; r < kRows; ++r) {
      Store(logits + r * sp + j, a0[r]);
      Store(logits + r * sp + j + kLanes, a1[r]);
    }
  }
  for (; j < keys; j += kLanes) {
    vf acc[kRows] = {};
    for (int64_t c = 0; c < d.h; ++c) {
      vf kv = Load(kt + c * sp + j);
      for (int r = 0; r < kRows; ++r) acc[r] += Splat(q[r * hp + c]) * kv;
    }
    for (int r = 0; r < kRows; ++r) Store(logits + r * sp + j, acc[r]);
  }
}

// out[r][c0 + 8u ...] = sum_j w[r][j] x[j][c0 + 8u ...] for U vectors of columns: kRows rows of
// weights w (kRows, Sp) times the rows x (Sp, Hp), into out (kRows, Hp).
template <int U>
void MixColumns(const float* w, int64_t sp, const float* x, int64_t hp, int64_t c0,
                int64_t keys, float* out) {
  vc acc[kRows][U] = {};
  for (int64_t j = 0; j < keys; ++j) {
    vc xv[U];
    for (int u = 0; u < U; ++u) xv[u] = LoadC(x + j * hp + c0 + u * kCols);
    for (int r = 0; r < kRows; ++r) {
      vc wr = SplatC(w[r * sp + j]);
      for (int u = 0; u < U; ++u) acc[r][u] += wr * xv[u];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < U; ++u) StoreC(out + r * hp + c0 + u * kCols, acc[r][u]);
}

void Mix(const float* w, int64_t sp, const float* x, int64_t hp, int64_t keys, float* out) {
  for (int64_t c0 = 0; c0 < hp;) {
    int64_t left = (hp - c0) / kCols;
    if (left >= 3) { MixColumns<3>(w, sp, x, hp, c0, keys, out); c0 += 3 * kCols; }
    else if (left == 2) { MixColumns<2>(w, sp, x, hp, c0, keys, out); c0 += 2 * kCols; }
    else { MixColumns<1>(w, sp, x, hp, c0, keys, out); c0 += kCols; }
  }
}

// acc[j][c0 + 8u ...] += sum_r w[r][j] y[r][c0 + 8u ...] for j < keys: the transposed product
// of Mix, accumulated into acc (Sp, Hp).
template <int U>
void AccumulateColumns(const float* w, int64_t sp, const float* y, int64_t hp, int64_t c0,
                       int64_t keys, float* acc) {
  vc yv[kRows][U];
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < U; ++u) yv[r][u] = LoadC(y + r * hp + c0 + u * kCols);
  for (int64_t j = 0; j < keys; ++j) {
    vc wr[kRows];
    for (int r = 0; r < kRows; ++r) wr[r] = SplatC(w[r * sp + j]);
    for (int u = 0; u < U; ++u) {
      float* a = acc + j * hp + c0 + u * kCols;
      vc sum = LoadC(a);
      for (int r = 0; r < kRows; ++r) sum += wr[r] * yv[r][u];
      StoreC(a, sum);
    }
  }
}

void Accumulate(const float* w, int64_t sp, const float* y, int64_t hp, int64_t keys,
                float* acc) {
  for (int64_t c0 = 0; c0 < hp;) {
    int64_t left = (hp - c0) / kCols;
    if (left >= 3) { AccumulateColumns<3>(w, sp, y, hp, c0, keys, acc); c0 += 3 * kCols; }
    else if (left == 2) { AccumulateColumns<2>(w, sp, y, hp, c0, keys, acc); c0 += 2 * kCols; }
    else { AccumulateColumns<1>(w, sp, y, hp, c0, keys, acc); c0 += kCols; }
  }
}

// x where key j + lane is below `visible`, else `fill`.
inline vf VisibleLanes(vf x, int64_t j, int64_t visible, float fill) {
  vi lane;
  for (int l = 0; l < kLanes; ++l) lane[l] = l;
  return lane + static_cast<int32_t>(j) < static_cast<int32_t>(visible) ? x : Splat(fill);
}

inline float SumLanes(vf x) {
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += x[l];
  return s;
}

inline float MaxLanes(vf x) {
  float m = x[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, x[l]);
  return m;
}

// The keys query t (0-based within its sequence) may attend to.
inline int64_t Visible(int64_t t, const Shape& d, bool causal) {
  return causal ? t + 1 : d.s;
}

struct Scratch {
  std::vector<float> kt, kr, vt, vr, q, g, out, logits, p, dk, dv, delta;
  void Reserve(const Shape& d) {
    delta.resize(d.t);
    kt.resize(d.h * d.sp()); vt.resize(d.h * d.sp());
    kr.resize(d.sp() * d.hp()); vr.resize(d.sp() * d.hp());
    dk.resize(d.sp() * d.hp()); dv.resize(d.sp() * d.hp());
    q.resize(kRows * d.hp()); g.resize(kRows * d.hp()); out.resize(kRows * d.hp());
    logits.resize(kRows * d.sp()); p.resize(kRows * d.sp());
  }
};

Scratch& LocalScratch(const Shape& d) {
  thread_local Scratch scratch;
  scratch.Reserve(d);
  return scratch;
}

// Copies `rows` rows of a (B, T, N, H) tensor's pair from row t0 into (kRows, Hp), scaled.
void LoadRows(const float* x, int64_t t0, int64_t rows, const Shape& d, float scale,
              float* out) {
  std::fill(out, out + kRows * d.hp(), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < d.h; ++c) out[r * d.hp() + c] = x[(t0 + r) * d.n * d.h + c] * scale;
}

void ForwardPair(const float* q, const float* k, const float* v, float* o, float* lse,
                 const Shape& d, bool causal, float scale) {
  Scratch& w = LocalScratch(d);
  CopyTransposed(k, d, w.kt.data());
  CopyRows(v, d, w.vr.data());
  const int64_t hp = d.hp(), sp = d.sp(), stride = d.n * d.h;
  for (int64_t t0 = 0; t0 < d.t; t0 += kRows) {
    int64_t rows = std::min<int64_t>(kRows, d.t - t0);
    int64_t keys = Padded(Visible(t0 + rows - 1, d, causal));
    LoadRows(q, t0, rows, d, scale, w.q.data());
    Logits(w.q.data(), w.kt.data(), d, keys, w.logits.data());
    float sums[kRows];
    std::fill(sums, sums + kRows, 1.0f);
    for (int64_t r = 0; r < kRows; ++r) {
      int64_t visible = r < rows ? Visible(t0 + r, d, causal) : 0;
      float* row = w.logits.data() + r * sp;
      float* pr = w.p.data() + r * sp;
      vf most = Splat(-INFINITY);
      for (int64_t j = 0; j < keys; j += kLanes) {
        vf x = VisibleLanes(Load(row + j), j, visible, -INFINITY);
        most = most < x ? x : most;
      }
      float max = r < rows ? MaxLanes(most) : 0.0f;
      vf total = {};
      for (int64_t j = 0; j < keys; j += kLanes) {
        vf e = VisibleLanes(Exp(Load(row + j) - max), j, visible, 0.0f);
        Store(pr + j, e);
        total += e;
      }
      if (r < rows) {
        sums[r] = SumLanes(total);
        lse[t0 + r] = max + std::log(sums[r]);
      }
    }
    Mix(w.p.data(), sp, w.vr.data(), hp, keys, w.out.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < d.h; ++c) o[(t0 + r) * stride + c] = w.out[r * hp + c] / sums[r];
  }
}

void BackwardPair(const float* q, const float* k, const float* v, const float* o,
                  const float* g, const float* lse, float* dq, float* dk, float* dv,
                  const Shape& d, bool causal, float scale) {
  Scratch& w = LocalScratch(d);
  CopyTransposed(k, d, w.kt.data());
  CopyRows(k, d, w.kr.data());
  CopyTransposed(v, d, w.vt.data());
  const int64_t hp = d.hp(), sp = d.sp(), stride = d.n * d.h;
  float* delta = w.delta.data();  // rowsum(dO * O): the softmax's gradient through its sum
  for (int64_t t = 0; t < d.t; ++t) {
    float sum = 0.0f;
    for (int64_t c = 0; c < d.h; ++c) sum += g[t * stride + c] * o[t * stride + c];
    delta[t] = sum;
  }
  std::fill(w.dk.begin(), w.dk.end(), 0.0f);
  std::fill(w.dv.begin(), w.dv.end(), 0.0f);
  for (int64_t t0 = 0; t0 < d.t; t0 += kRows) {
    int64_t rows = std::min<int64_t>(kRows, d.t - t0);
    int64_t keys = Padded(Visible(t0 + rows - 1, d, causal));
    LoadRows(q, t0, rows, d, scale, w.q.data());
    LoadRows(g, t0, rows, d, 1.0f, w.g.data());
    Logits(w.q.data(), w.kt.data(), d, keys, w.logits.data());  // S
    Logits(w.g.data(), w.vt.data(), d, keys, w.p.data());       // dP = dO V^T
    // p <- P = exp(S - lse), logits <- dS = P (dP - delta), zero where masked or padding
    for (int r = 0; r < kRows; ++r) {
      int64_t visible = r < rows ? Visible(t0 + r, d, causal) : 0;
      float* s = w.logits.data() + r * sp;
      float* pr = w.p.data() + r * sp;
      vf m = Splat(r < rows ? lse[t0 + r] : 0.0f), dl = Splat(r < rows ? delta[t0 + r] : 0.0f);
      for (int64_t j = 0; j < keys; j += kLanes) {
        vf p = VisibleLanes(Exp(Load(s + j) - m), j, visible, 0.0f);
        Store(s + j, p * (Load(pr + j) - dl));
        Store(pr + j, p);
      }
    }
    // dQ_r = scale sum_j dS_rj K_j; dK_j += sum_r dS_rj Q_r (Q already scaled); dV_j += P_rj dO_r
    Mix(w.logits.data(), sp, w.kr.data(), hp, keys, w.out.data());
    Accumulate(w.logits.data(), sp, w.q.data(), hp, keys, w.dk.data());
    Accumulate(w.p.data(), sp, w.g.data(), hp, keys, w.dv.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < d.h; ++c) dq[(t0 + r) * stride + c] = w.out[r * hp + c] * scale;
  }
  for (int64_t j = 0; j < d.s; ++j)
    for (int64_t c = 0; c < d.h; ++c) {
      dk[j * stride + c] = w.dk[j * hp + c];
      dv[j * stride + c] = w.dv[j * hp + c];
    }
}

Shape ShapeOf(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k) {
  auto qd = q.dimensions(), kd = k.dimensions();
  return Shape{qd[0], qd[1], kd[1], qd[2], qd[3]};
}

ffi::Error Check(const Shape& d, bool causal) {
  if (causal && d.t != d.s)
    return ffi::Error::InvalidArgument("causal attention needs as many keys as queries");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> o,
                   ffi::ResultBuffer<ffi::F32> lse, int64_t causal) {
  Shape d = ShapeOf(q, k);
  if (ffi::Error e = Check(d, causal); e.failure()) return e;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.h));
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = o->typed_data(), *lp = lse->typed_data();
  ParallelFor(pool, d.b * d.n, [&](int64_t i) {
    int64_t tq = d.queries_at(i), tk = d.keys_at(i);
    ForwardPair(qp + tq, kp + tk, vp + tk, op + tq, lp + i * d.t, d, causal, scale);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                    int64_t causal) {
  Shape d = ShapeOf(q, k);
  if (ffi::Error e = Check(d, causal); e.failure()) return e;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.h));
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *opp = o.typed_data(), *lp = lse.typed_data(), *gp = g.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  ParallelFor(pool, d.b * d.n, [&](int64_t i) {
    int64_t tq = d.queries_at(i), tk = d.keys_at(i);
    BackwardPair(qp + tq, kp + tk, vp + tk, opp + tq, gp + tq, lp + i * d.t, dqp + tq,
                 dkp + tk, dvp + tk, d, causal, scale);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("causal"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("causal"));
