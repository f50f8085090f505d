// 2-D convolutions on the CPU by oneDNN (arch/cpu_conv.py registers and calls them): the forward
// pass, the input gradient and the kernel gradient, each one XLA FFI call into oneDNN's blocked
// direct-convolution kernels (brgconv / jit avx512 on this project's machines), the kernels
// PyTorch's CPU convolutions use. XLA:CPU computes a convolution as patches packed for a matrix
// multiply (Eigen), 1.4-1.9x oneDNN's time at the UNet's sizes (docs/cpu_conv.md).
//
// Layouts: x and its gradient (N, H, W, C) and y and its gradient (N, OH, OW, O) float32,
// channels last; the kernel and its gradient (KH, KW, C, O) (flax's HWIO). Strides and the low
// and high padding of each spatial axis are attributes; no dilation, one feature group. oneDNN
// picks its own blocked kernel layout: the kernel is reordered into it on each call (K x K x C x
// O floats, a few microseconds), and the kernel gradient out of it.
//
// Threads: the batch is cut into pieces, run as tasks on XLA's intra-op thread pool (the caller
// and the pool's threads claim them one at a time), each by oneDNN on one thread; a kernel
// gradient sums its pieces' partial gradients. oneDNN's own OpenMP threads would contend with
// XLA's, which spin between ops: run that way, the UNet's convolutions took 1.6-1.9x their time
// alone and its step was no faster (docs/cpu_conv.md). Each piece shape builds its primitives
// once (a cache under a lock); each task has its own scratchpad.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu_vector.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;
constexpr auto f32 = dnnl::memory::data_type::f32;

enum Pass : int64_t { kForward = 0, kInputGradient = 1, kKernelGradient = 2 };

// pass, N (of a piece), H, W, C, O, KH, KW, strides (2), pads (4)
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

struct Entry {
  dnnl::primitive conv;
  dnnl::memory::desc x, y, w_plain, w_blocked, scratch;  // NHWC, NHWC, HWIO, oneDNN's, bytes
  bool same_layout = false;  // the primitive takes the plain kernel layout as it is
  dnnl::reorder w_reorder;   // plain -> blocked (the kernel), or blocked -> plain (its gradient)
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

Entry Build(const Key& key) {
  auto [pass, n, h, w, c, o, kh, kw, sh, sw, ph0, ph1, pw0, pw1] = key;
  dnnl::engine& eng = Engine();
  Entry e;
  int64_t oh = (h + ph0 + ph1 - kh) / sh + 1, ow = (w + pw0 + pw1 - kw) / sw + 1;
  e.x = dnnl::memory::desc({n, c, h, w}, f32, tag::nhwc);
  e.y = dnnl::memory::desc({n, o, oh, ow}, f32, tag::nhwc);
  e.w_plain = dnnl::memory::desc({o, c, kh, kw}, f32, tag::hwio);
  auto any = dnnl::memory::desc({o, c, kh, kw}, f32, tag::any);
  dims strides{sh, sw}, lo{ph0, pw0}, hi{ph1, pw1};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto forward = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, e.x, any, e.y,
      strides, lo, hi, attr);
  if (pass == kForward) {
    e.w_blocked = forward.weights_desc();
    e.scratch = forward.scratchpad_desc();
    e.conv = dnnl::convolution_forward(forward);
  } else if (pass == kInputGradient) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, e.x, any, e.y, strides, lo, hi, forward, attr);
    e.w_blocked = pd.weights_desc();
    e.scratch = pd.scratchpad_desc();
    e.conv = dnnl::convolution_backward_data(pd);
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, e.x, any, e.y, strides, lo, hi, forward, attr);
    e.w_blocked = pd.diff_weights_desc();
    e.scratch = pd.scratchpad_desc();
    e.conv = dnnl::convolution_backward_weights(pd);
  }
  e.same_layout = e.w_blocked == e.w_plain;
  if (!e.same_layout) {
    // built once on descriptions; each call runs it on its own buffers
    dnnl::memory plain(e.w_plain, eng, DNNL_MEMORY_NONE);
    dnnl::memory blocked(e.w_blocked, eng, DNNL_MEMORY_NONE);
    e.w_reorder = pass == kKernelGradient ? dnnl::reorder(blocked, plain)
                                          : dnnl::reorder(plain, blocked);
  }
  return e;
}

// The primitives of `key`, built on first use (on a thread set to one OpenMP thread, which
// oneDNN's kernels plan their work for).
const Entry& Lookup(const Key& key) {
  static std::mutex lock;
  static std::map<Key, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> guard(lock);
  auto& entry = cache[key];
  if (!entry) entry = std::make_unique<Entry>(Build(key));
  return *entry;
}

// Runs the entry's kernel reorder on the calling thread: the kernel from the plain layout into
// the blocked one, or (`to_plain`) the kernel gradient back.
void Reorder(const Entry& e, bool to_plain, void* from, void* to) {
  dnnl::engine& eng = Engine();
  dnnl::memory src(to_plain ? e.w_blocked : e.w_plain, eng, from);
  dnnl::memory dst(to_plain ? e.w_plain : e.w_blocked, eng, to);
  dnnl::stream stream(eng);
  e.w_reorder.execute(stream, src, dst);
  stream.wait();
}

ffi::Error Conv(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::AnyBuffer b,
                ffi::Result<ffi::AnyBuffer> out, int64_t pass, int64_t sh, int64_t sw,
                int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  // (x, w) -> y; (dy, w) -> dx; (x, dy) -> dw
  auto xs = pass == kInputGradient ? out->dimensions() : a.dimensions();
  auto ws = pass == kKernelGradient ? out->dimensions() : b.dimensions();
  if (xs.size() != 4 || ws.size() != 4 || xs[3] != ws[2])
    return ffi::Error::InvalidArgument(
        "strata_conv: expected x (N, H, W, C), kernel (KH, KW, C, O)");
  if (a.element_type() != ffi::DataType::F32 || b.element_type() != ffi::DataType::F32 ||
      out->element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("strata_conv: expected float32 arrays");
  // equal pieces, as many as the pool has threads where that divides the batch (pieces of two
  // sizes could have oneDNN pick two kernel layouts)
  const int64_t n = xs[0];
  int64_t count = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n));
  while (n % count) --count;
  const int64_t piece = n / count;
  const Entry* entry;
  try {
    omp_set_num_threads(1);
    entry = &Lookup(Key{pass, piece, xs[1], xs[2], xs[3], ws[3], ws[0], ws[1], sh, sw, ph0, ph1,
                        pw0, pw1});
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("strata_conv: oneDNN: ") + err.what());
  }
  std::string error;
  const Entry& first = *entry;
  // bytes of one example of x and of y
  const int64_t x_row = xs[1] * xs[2] * xs[3] * 4;
  const int64_t y_row = first.y.get_size() / piece;
  // the kernel in oneDNN's layout (read by every task), or each task's partial kernel gradient
  const size_t w_bytes = first.w_blocked.get_size();
  const bool gradient = pass == kKernelGradient;
  // kept between calls (per calling thread): fresh blocks of this size would be new pages, faulted
  // in on every call
  thread_local std::vector<char> kept;
  if (kept.size() < w_bytes * count) kept.resize(w_bytes * count);
  char* blocked = kept.data();  // the caller's: a thread_local named in a task is the task's
  void* w_ptr = gradient ? out->untyped_data() : b.untyped_data();
  try {
    if (!gradient && !first.same_layout) Reorder(first, false, w_ptr, blocked);
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("strata_conv: oneDNN: ") + err.what());
  }
  char* a_ptr = static_cast<char*>(a.untyped_data());
  char* b_ptr = static_cast<char*>(b.untyped_data());
  char* o_ptr = static_cast<char*>(out->untyped_data());
  std::mutex error_lock;
  strata::ParallelFor(pool, count, [&](int64_t i) {
    const Entry& e = first;
    try {
      omp_set_num_threads(1);
      dnnl::engine& eng = Engine();
      dnnl::stream stream(eng);
      thread_local std::vector<char> scratch_bytes;
      if (scratch_bytes.size() < e.scratch.get_size()) scratch_bytes.resize(e.scratch.get_size());
      dnnl::memory scratch(e.scratch, eng, scratch_bytes.data());
      const int64_t at = i * piece;
      if (pass == kForward) {
        dnnl::memory x(e.x, eng, a_ptr + at * x_row), y(e.y, eng, o_ptr + at * y_row);
        dnnl::memory w(e.w_blocked, eng, e.same_layout ? w_ptr : blocked);
        e.conv.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
      } else if (pass == kInputGradient) {
        dnnl::memory dy(e.y, eng, a_ptr + at * y_row), dx(e.x, eng, o_ptr + at * x_row);
        dnnl::memory w(e.w_blocked, eng, e.same_layout ? w_ptr : blocked);
        e.conv.execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w},
                                {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_SCRATCHPAD, scratch}});
      } else {
        dnnl::memory x(e.x, eng, a_ptr + at * x_row), dy(e.y, eng, b_ptr + at * y_row);
        dnnl::memory dw(e.w_blocked, eng, blocked + i * w_bytes);
        e.conv.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy},
                                {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_SCRATCHPAD, scratch}});
      }
      stream.wait();
    } catch (const dnnl::error& err) {
      std::lock_guard<std::mutex> guard(error_lock);
      error = err.what();
    }
  });
  if (!error.empty()) return ffi::Error::Internal("strata_conv: oneDNN: " + error);
  if (gradient) {
    // the pieces' partial gradients added (the same layout, padding included), then reordered
    float* sum = reinterpret_cast<float*>(blocked);
    const int64_t floats = w_bytes / 4;
    for (int64_t i = 1; i < count; ++i) {
      const float* part = reinterpret_cast<const float*>(blocked + i * w_bytes);
      for (int64_t j = 0; j < floats; ++j) sum[j] += part[j];
    }
    try {
      if (first.same_layout)
        std::memcpy(w_ptr, sum, w_bytes);
      else
        Reorder(first, true, sum, w_ptr);
    } catch (const dnnl::error& err) {
      return ffi::Error::Internal(std::string("strata_conv: oneDNN: ") + err.what());
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataConv, Conv,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("pass")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("ph0")
                                  .Attr<int64_t>("ph1")
                                  .Attr<int64_t>("pw0")
                                  .Attr<int64_t>("pw1"));
