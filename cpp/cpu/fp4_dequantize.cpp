// FP4Dequantize::eval_cpu: row by row of K, exact products e2m1 * scale in fp32,
// rounded once to the output dtype.
#include <vector>

#include "common/fp4_format.h"
#include "cpu/half_convert.h"
#include "cpu/tensor_view.h"
#include "mlx/backend/cpu/encoder.h"
#include "ops/fp4_dequantize.h"

namespace marlin {

void FP4Dequantize::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu::begin_cpu_eval(stream(), inputs, {&out});
  const uint32_t* words = inputs[0].data<uint32_t>();
  const uint16_t* scales = static_cast<const uint16_t*>(inputs[1].data<void>());
  const bool scales_bf16 = inputs[1].dtype() == mx::bfloat16;
  const int64_t N = inputs[0].shape(1);
  const int64_t K = inputs[0].shape(0) * kCodesPerWord;
  const int64_t g = group_size_;
  const cpu::ElemType out_type = cpu::elem_type(out.dtype());
  char* out_ptr = static_cast<char*>(out.data<void>());
  const int64_t row_bytes = N * static_cast<int64_t>(out.itemsize());
  encoder.dispatch([=]() {
    std::vector<float> row(N);
    for (int64_t k = 0; k < K; ++k) {
      const uint32_t* wrow = words + (k / kCodesPerWord) * N;
      const uint16_t* srow = scales + (k / g) * N;
      const int i = static_cast<int>(k % kCodesPerWord);
      for (int64_t n = 0; n < N; ++n) {
        const float s = scales_bf16 ? cpu::bf16_to_float(srow[n]) : cpu::fp16_to_float(srow[n]);
        row[n] = kE2M1Table[extract_code(wrow[n], i)] * s;
      }
      cpu::store_from_float32(row.data(), out_ptr + k * row_bytes, out_type, N);
    }
  });
}

} // namespace marlin
