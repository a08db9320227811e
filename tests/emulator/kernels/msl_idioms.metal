// MSL idioms found in large real-world kernel libraries: overloads on
// address spaces, optional (function-constant) buffers, vector direct
// initialisation, array-reference parameters in templates, non-const
// conversion operators and Apple's __metal_* builtins.
#include <metal_stdlib>
using namespace metal;

struct Pair2 {
  float a, b;
  Pair2() thread : a(0), b(0) {}
  Pair2() threadgroup : a(0), b(0) {}
  Pair2(float x, float y) thread : a(x), b(y) {}
  Pair2(float x, float y) device : a(x), b(y) {}
  Pair2(float x, float y) constant : a(x), b(y) {}
  float sum() const thread { return a + b; }
  float sum() const threadgroup { return a + b; }
  float sum() const device { return a + b; }
};

template <typename T>
thread T& accumulate(thread T& acc, T v) {
  acc += v;
  return acc;
}
template <typename T>
threadgroup T& accumulate(threadgroup T& acc, T v) {
  acc += v;
  return acc;
}

template <typename T>
struct element_of {};
template <typename T>
struct element_of<device T*> {
  using type = T;
};
template <typename T>
struct element_of<threadgroup T*> {
  using type = T;
};

struct Code4 {
  uchar bits;
  operator float() thread { return float(bits & 0xf) * 0.5f; }
};

template <typename T, short N>
METAL_FUNC void sort_pair(thread T (&vals)[N]) {
  if (vals[0] > vals[1]) {
    T t = vals[0];
    vals[0] = vals[1];
    vals[1] = t;
  }
}

constant bool has_bias [[function_constant(0)]];

struct Scale {
  float alpha;
};

kernel void idioms(device float* out [[buffer(0)]],
                   const device float* bias [[buffer(1), function_constant(has_bias)]],
                   const constant Scale* scale [[buffer(2), function_constant(has_bias)]],
                   uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float shared_acc;
  if (lid == 0) shared_acc = 0.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  Pair2 p(1.5f, 2.0f);
  float acc = 0;
  accumulate(acc, p.sum());
  if (lid == 0) accumulate(shared_acc, 10.0f);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  element_of<device float*>::type e = 4.0f;
  Code4 c{uchar(lid)};
  short2 pos(lid % 4, lid / 4);
  float2 sorted_in[1];
  float pair[2] = {float(lid % 3), 1.0f};
  sort_pair(pair);
  bool flip = lid % 2 == 0;
  float2 chosen = flip ? float2(pair[0], pair[1]) : float2(pair[1], pair[0]);
  const float alpha = scale->alpha;  // read even when disabled: zeros
  (void)sorted_in;
  float b = has_bias ? bias[lid] : alpha;
  out[lid] = acc + shared_acc + e + float(c) + float(pos.x + 10 * pos.y) + chosen.x * 100 + b * 1000 +
             __metal_simd_sum(1.0f) * 10000 + float(__metal_get_thread_index_in_simdgroup(ushort())) * 0;
}
