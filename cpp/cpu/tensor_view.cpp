#include "cpu/tensor_view.h"

#include <cstdlib>
#include <cstring>

#include "common/fp4_format.h"
#include "cpu/half_convert.h"

namespace marlin::cpu {

ElemType elem_type(mx::Dtype t) {
  if (t == mx::float16) return ElemType::Float16;
  if (t == mx::bfloat16) return ElemType::BFloat16;
  return ElemType::Float32;
}

PackedWeight packed_weight_view(const mx::array& words, const mx::array& scales, int group_size, int64_t expert) {
  PackedWeight w;
  w.N = words.shape(-1);
  w.K = int64_t(words.shape(-2)) * kCodesPerWord;
  w.group_size = group_size;
  w.words = words.data<uint32_t>() + expert * (w.K / kCodesPerWord) * w.N;
  w.scales = static_cast<const uint16_t*>(scales.data<void>()) + expert * (w.K / group_size) * w.N;
  w.scales_bf16 = scales.dtype() == mx::bfloat16;
  return w;
}

const float* as_float32(const void* data, mx::Dtype type, int64_t count, std::vector<float>& storage) {
  if (type == mx::float32) return static_cast<const float*>(data);
  storage.resize(count);
  const uint16_t* h = static_cast<const uint16_t*>(data);
  if (type == mx::bfloat16) {
    for (int64_t i = 0; i < count; ++i) storage[i] = bf16_to_float(h[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) storage[i] = fp16_to_float(h[i]);
  }
  return storage.data();
}

void store_from_float32(const float* src, void* dst, ElemType type, int64_t count) {
  switch (type) {
    case ElemType::Float32:
      std::copy(src, src + count, static_cast<float*>(dst));
      break;
    case ElemType::Float16:
      for (int64_t i = 0; i < count; ++i) static_cast<uint16_t*>(dst)[i] = float_to_fp16(src[i]);
      break;
    case ElemType::BFloat16:
      for (int64_t i = 0; i < count; ++i) static_cast<uint16_t*>(dst)[i] = float_to_bf16(src[i]);
      break;
  }
}

mx::cpu::CommandEncoder& begin_cpu_eval(mx::Stream s, const std::vector<mx::array>& inputs,
                                        std::initializer_list<mx::array*> outputs) {
  auto& encoder = mx::cpu::get_command_encoder(s);
  for (auto& in : inputs) encoder.set_input_array(in);
  // MLX_MARLIN_CPU_POISON=1 (tests): outputs start as all-ones bytes (NaN in every float
  // type), so an element a kernel fails to write shows up instead of reading as 0.
  static const bool poison = [] {
    const char* v = std::getenv("MLX_MARLIN_CPU_POISON");
    return v && v[0] && std::strcmp(v, "0") != 0;
  }();
  for (auto* out : outputs) {
    out->set_data(mx::allocator::malloc(out->nbytes()));
    if (poison) std::memset(out->data<void>(), 0xFF, out->nbytes());
    encoder.set_output_array(*out);
  }
  return encoder;
}

} // namespace marlin::cpu
