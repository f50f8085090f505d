// The sum of a float32 array over its leading rows as an XLA FFI custom call
// (arch/cpu_kernels.py registers it): out[c] = sum_r x[r, c] for x viewed as (R, C), where C is
// the result's size. The gradients of biases and norm scales are such sums of a (batch, ...,
// features) cotangent; XLA:CPU computes them as reduce-window trees at a third to a twelfth of
// memory speed (docs/speed_kernels.md item 13).
//
// The rows are cut into blocks of a fixed size, each summed on one of XLA's intra-op threads
// into its own partial row, and the partials are added in block order: the result does not
// depend on how many threads ran or which block finished first.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_vector.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace strata;  // NOLINT: the vector helpers

// rows per block: large enough that a block's partial row costs little to add, small enough
// that a (4096, 384) gradient is 16 tasks for the two or more threads
constexpr int64_t kBlockRows = 256;

// out[0:cols] = sum of rows [0, rows) of x (rows of `cols` floats, contiguous)
void SumRows(const float* x, int64_t rows, int64_t cols, float* out) {
  int64_t c = 0;
  for (; c + 4 * kLanes <= cols; c += 4 * kLanes) {
    vf a0{}, a1{}, a2{}, a3{};
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = x + r * cols + c;
      a0 += Load(p);
      a1 += Load(p + kLanes);
      a2 += Load(p + 2 * kLanes);
      a3 += Load(p + 3 * kLanes);
    }
    Store(out + c, a0);
    Store(out + c + kLanes, a1);
    Store(out + c + 2 * kLanes, a2);
    Store(out + c + 3 * kLanes, a3);
  }
  for (; c + kLanes <= cols; c += kLanes) {
    vf a{};
    for (int64_t r = 0; r < rows; ++r) a += Load(x + r * cols + c);
    Store(out + c, a);
  }
  for (; c < cols; ++c) {
    float a = 0.0f;
    for (int64_t r = 0; r < rows; ++r) a += x[r * cols + c];
    out[c] = a;
  }
}

ffi::Error ColumnSum(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::ResultBuffer<ffi::F32> out) {
  if (x.element_type() != ffi::F32)
    return ffi::Error::InvalidArgument("strata_column_sum: expected a float32 operand");
  const int64_t cols = static_cast<int64_t>(out->element_count());
  const int64_t total = static_cast<int64_t>(x.element_count());
  if (cols == 0 || total % cols)
    return ffi::Error::InvalidArgument("strata_column_sum: the operand's size is not a "
                                       "multiple of the result's");
  const int64_t rows = total / cols, blocks = std::max<int64_t>(1, (rows + kBlockRows - 1) /
                                                                       kBlockRows);
  const float* xp = x.typed_data<float>();
  float* op = out->typed_data();
  if (blocks == 1) {
    SumRows(xp, rows, cols, op);
    return ffi::Error::Success();
  }
  std::vector<float> partial(blocks * cols);
  ParallelFor(pool, blocks, [&](int64_t i) {
    int64_t first = i * kBlockRows, count = std::min(kBlockRows, rows - first);
    SumRows(xp + first * cols, count, cols, partial.data() + i * cols);
  });
  std::memcpy(op, partial.data(), cols * sizeof(float));
  for (int64_t i = 1; i < blocks; ++i)
    for (int64_t c = 0; c < cols; ++c) op[c] += partial[i * cols + c];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StrataColumnSum, ColumnSum,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
