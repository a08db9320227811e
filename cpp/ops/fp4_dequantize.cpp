#include "ops/fp4_dequantize.h"

#include "common/fp4_format.h"
#include "ops/fp4_gemm.h"
#include "ops/row_contiguous.h"
#include "ops/validate.h"

namespace marlin {

mx::array fp4_dequantize(const mx::array& w, const mx::array& scales, int group_size, mx::Dtype dtype,
                         mx::StreamOrDevice s) {
  const char* op = "fp4_dequantize";
  const int K = check_packed_weight(op, "w", w, "scales", scales, group_size, 0);
  if (dtype != mx::float32 && dtype != mx::float16 && dtype != mx::bfloat16)
    invalid_argument(op, "dtype must be float32, float16 or bfloat16.");
  auto stream = mx::to_stream(s);
  return mx::array({K, w.shape(1)}, dtype, std::make_shared<FP4Dequantize>(stream, group_size),
                   {row_contiguous(w, stream), row_contiguous(scales, stream)});
}

std::vector<mx::Shape> FP4Dequantize::output_shapes(const std::vector<mx::array>& inputs) {
  return {mx::Shape{inputs[0].shape(0) * kCodesPerWord, inputs[0].shape(1)}};
}

std::vector<mx::array> FP4Dequantize::vjp(const std::vector<mx::array>&, const std::vector<mx::array>&,
                                          const std::vector<int>&, const std::vector<mx::array>&) {
  throw std::invalid_argument(kFrozenWeightsMessage);
}

} // namespace marlin
