// MSL vector constructor, conversion and swizzle semantics, plus half/bfloat
// rounding. One thread writes a list of results the test checks one by one.
#include <metal_stdlib>
using namespace metal;

typedef vec<float, 2> frag_type;

kernel void vector_semantics(device float* out [[buffer(0)]],
                             device const half* hin [[buffer(1)]],
                             uint tid [[thread_position_in_grid]]) {
  if (tid != 0) return;
  int k = 0;
  half4 h4 = half4(hin[0], hin[1], hin[2], hin[3]);
  float4 f = float4(h4);                                // convert each component
  out[k++] = f.x; out[k++] = f.y; out[k++] = f.z; out[k++] = f.w;            // 0..3
  float4 c = float4(float2(1.0f, 2.0f), float2(3.0f, 4.0f));
  out[k++] = dot(c, float4(1000, 100, 10, 1));                               // 4
  float4 d = float4(float3(5, 6, 7), 8.0f);
  out[k++] = d.w + 10 * d.x;                                                 // 5
  float4 e = float4(1.5f);                                                   // splat
  out[k++] = e.x + e.y + e.z + e.w;                                          // 6
  uint4 u = uint4(float4(1.7f, 0.2f, 2.5f, 3.9f));                           // truncating convert
  out[k++] = float(u.x * 1000 + u.y * 100 + u.z * 10 + u.w);                 // 7
  float4 g = (float4)uint4(1, 2, 3, 4);                                      // C-style cast converts
  out[k++] = g.y;                                                            // 8
  float4 sw = c.wzyx;
  out[k++] = sw.x * 10 + sw.w;                                               // 9
  float2 bg = c.bg;
  out[k++] = bg.x * 10 + bg.y;                                               // 10
  c.xy = float2(9.0f, 8.0f);                                                 // swizzle store
  out[k++] = c.x * 1000 + c.y * 100 + c.z * 10 + c.w;                        // 11
  half2 s = half2(2.25h);
  out[k++] = float(s.x + s.y);                                               // 12
  frag_type ft = frag_type(0.5f);                                            // typedef'd vec splat
  out[k++] = ft.x + ft.y;                                                    // 13
  vec<int, 3> i3 = vec<int, 3>(float3(-1.5f, 2.5f, 7.9f));
  out[k++] = float(i3.x * 100 + i3.y * 10 + i3.z);                           // 14
  int4 cmp = int4(f > 1.0f);                                                 // -1 for true
  out[k++] = float(cmp.x + cmp.y + cmp.z + cmp.w);                           // 15
  float3 f3 = float3(1, 2, 3) * 2.0f + float3(0.5f);
  out[k++] = f3.z;                                                           // 16
  float2 m2 = max(metal::float2(1, 5), float2(3, 2));
  out[k++] = m2.x * 10 + m2.y;                                               // 17
  ushort2 us = as_type<ushort2>(1.0f);
  out[k++] = float(us.y);                                                    // 18 (0x3f80)
  out[k++] = select(1.0f, 2.0f, true);                                       // 19
  float4 sel = select(float4(0), float4(1), bool4(true, false, true, false));
  out[k++] = sel.x + sel.y * 10 + sel.z * 100 + sel.w * 1000;                // 20
  out[k++] = clamp(7.0f, 0.0f, 5.0f);                                        // 21
  uchar4 bytes = as_type<uchar4>(0x04030201u);
  out[k++] = float(bytes.x + bytes.w * 10);                                  // 22
  out[k++] = float(static_cast<int2>(float2(3.7f, -3.7f)).y);                // 23
  bfloat2 bf = bfloat2(1.0f, 3.0f);
  out[k++] = float(bf.x + bf.y);                                             // 24
  out[k++] = fast::exp(1.0f) + precise::sqrt(4.0f);                          // 25
  out[k++] = float(half(1.0h) / half(3.0h));                                 // 26
  constexpr float4 kc = float4(float2(1, 2), 3, 4);                          // constexpr constructor
  out[k++] = kc.x + kc.y + kc.z;                                             // 27
  out[k++] = float(half4(kc).w);                                             // 28
  float4 neg = -(float4)uint4(1, 2, 3, 4) * 2.0f;                            // unary minus on a cast
  out[k++] = neg.z;                                                          // 29
}

// Conversions of each input: half, bfloat (as bits) and per-op rounded math.
kernel void rounding(device const float* x [[buffer(0)]],
                     device half* h [[buffer(1)]],
                     device ushort* bf [[buffer(2)]],
                     device half* hsum [[buffer(3)]],
                     device ushort* bfsum [[buffer(4)]],
                     device const float* y [[buffer(5)]],
                     uint i [[thread_position_in_grid]]) {
  h[i] = half(x[i]);
  bf[i] = as_type<ushort>(bfloat(x[i]));
  half a = half(x[i]), b = half(y[i]);
  hsum[i] = a * b + a;             // each operation rounds to half
  bfloat c = bfloat(x[i]), d = bfloat(y[i]);
  bfsum[i] = as_type<ushort>(bfloat(c * d + c));
}

// Conversions inside templates: T(x) with T a vector converts per component
// (a plain C++ functional cast would reinterpret same-sized vectors), and
// half <-> bfloat conversions (which clang C++ rejects) are allowed as in MSL.
template <typename T, typename U>
METAL_FUNC T convert_to(U x) {
  return T(x);
}

template <typename T>
[[kernel]] void template_casts(device float* out [[buffer(0)]], uint tid [[thread_position_in_grid]]) {
  if (tid != 0) return;
  T v = convert_to<T>(float4(1.5f, 2.5f, -3.0f, 4.9f));
  out[0] = float(v.x) + 10 * float(v.w);
  half h = 2.75h;
  bfloat b = bfloat(h);
  bfloat b2 = static_cast<bfloat>(h);
  half h2 = half(b) + (half)b2;
  out[1] = float(b);
  out[2] = float(h2);
  out[3] = float(convert_to<half>(bfloat(3.0f)));
}
template [[host_name("template_casts_uint4")]] [[kernel]] decltype(template_casts<uint4>) template_casts<uint4>;
template [[host_name("template_casts_half4")]] [[kernel]] decltype(template_casts<half4>) template_casts<half4>;
