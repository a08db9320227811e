// CPU flash attention.  Compiled once per instruction set (MARLIN_ISA = generic /
// avx2 / avx512 with matching -m flags), with GCC vector extensions of the native
// register width, like fp4_gemm_kernels.cpp.
//
// A task (see common/attention_plan.h) owns R query rows (some query heads of one
// kv group x a block of queries) and a range of keys.  Its queries are converted
// once to a transposed, pre-scaled fp32 tile QT [D][RP] (RP = R rounded up to the
// vector width, scale * log2(e) folded in so the softmax runs on exp2).  For each
// block of 64 keys:
//   1. K and V are used in place (fp32, unit feature stride, full block) or
//      converted once to fp32 (zero-padded to a multiple of 8 keys);
//   2. scores S^T [keys][rows] = K @ QT by a register-blocked microkernel
//      (broadcast one key element, FMA against row vectors); with few rows
//      (R <= min(8, lanes/2), i.e. decode) by dot products along D instead;
//   3. mask / causal limit / key padding set scores to -inf (additive masks are
//      added, times log2(e));
//   4. online softmax, vectorized over rows: running max m and sum l, the scores
//      become p = exp2(s - m_new) in place and the accumulator is rescaled by
//      exp2(m_old - m_new);
//   5. O [rows][D] += P @ V, register-blocked over rows x feature vectors.
// Fully masked rows keep m = -inf and l = 0 and are written as zeros.  In decode
// (split-K) the unnormalized (O, m, l) of each key range go to scratch and a second
// pass merges them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/attention_params.h"
#include "common/attention_plan.h"
#include "cpu/attention_kernels.h"
#include "cpu/half_convert.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"


namespace marlin::cpu {
namespace MARLIN_ISA {
namespace {


constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kKeyPad = 8;  // converted key blocks are padded to a multiple of this

// NaN-sticky maximum: a NaN score must reach the row's output (IEEE propagation) rather
// than be dropped by the comparison.
inline vf vmax(vf a, vf b) {
  return ((a > b) | (a != a)) ? a : b;
}

// 2^x for x <= 0 (also fine up to 127), relative error ~2e-7; exp2(-inf) = 0.
// Round-to-nearest split x = n + f, f in [-0.5, 0.5]; 2^f by its degree-6 Taylor
// polynomial in f*ln2 (remainder < 1.2e-7); 2^n built in the exponent bits.
inline vf exp2v(vf x) {
  x = x < splat(-127.f) ? splat(-127.f) : x;  // keeps NaN (then the result is NaN)
  const vf magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x + magic) - magic;
  vf f = x - n;
  vf p = splat(1.5252733804059840e-05f);
  p = p * f + 1.5403530393381609e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f;
  p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f;
  p = p * f + 6.9314718055994531e-01f;
  p = p * f + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;  // n = -127 gives +0.0
  return p * (vf)e;
}

inline float load_scalar(const void* base, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::Float32: return static_cast<const float*>(base)[i];
    case ElemType::Float16: return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
    case ElemType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.f;
}

// n (a multiple of kLanes when stride == 1) elements at base[i], base[i+stride], ... to fp32.
void convert_row(const void* base, ElemType t, int64_t i, int64_t stride, int n, float* dst) {
  if (stride == 1) {
    if (t == ElemType::Float32) {
      std::memcpy(dst, static_cast<const float*>(base) + i, sizeof(float) * n);
      return;
    }
    const uint16_t* src = static_cast<const uint16_t*>(base) + i;
    if (t == ElemType::BFloat16) {
      for (int c = 0; c < n; c += kLanes) {
        vh h;
        std::memcpy(&h, src + c, sizeof(h));
        store(dst + c, (vf)(__builtin_convertvector(h, vu) << 16));
      }
      return;
    }
#if defined(__AVX512F__)
    for (int c = 0; c < n; c += kLanes) {
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c));
      _mm512_storeu_ps(dst + c, _mm512_cvtph_ps(h));
    }
    return;
#elif defined(__AVX2__) && defined(__F16C__)
    for (int c = 0; c < n; c += kLanes) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c));
      _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(h));
    }
    return;
#else
    for (int c = 0; c < n; ++c) dst[c] = fp16_to_float(src[c]);
    return;
#endif
  }
  for (int c = 0; c < n; ++c) dst[c] = load_scalar(base, t, i + c * stride);
}

void store_row(const float* src, float inv, void* out, ElemType t, int64_t i, int n) {
  switch (t) {
    case ElemType::Float32: {
      float* o = static_cast<float*>(out) + i;
      for (int c = 0; c < n; ++c) o[c] = src[c] * inv;
      return;
    }
    case ElemType::Float16: {
      uint16_t* o = static_cast<uint16_t*>(out) + i;
#if defined(__AVX512F__)
      for (int c = 0; c < n; c += 16) {
        __m512 x = _mm512_mul_ps(_mm512_loadu_ps(src + c), _mm512_set1_ps(inv));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
      }
#else
      for (int c = 0; c < n; ++c) o[c] = float_to_fp16(src[c] * inv);
#endif
      return;
    }
    case ElemType::BFloat16: {
      uint16_t* o = static_cast<uint16_t*>(out) + i;
      for (int c = 0; c < n; ++c) o[c] = float_to_bf16(src[c] * inv);
      return;
    }
  }
}

// S^T[j][r0 .. r0 + NV*kLanes) = sum_d K[j][d] * QT[d][...] for j in [j0, j0 + MR).
template <int MR, int NV>
inline void qk_tile(const float* K, int64_t ldk, const float* qt, int rp, int D, int j0, int r0, float* s) {
  vf acc[MR][NV] = {};
  const float* kp = K + j0 * ldk;
  const float* qp = qt + r0;
  for (int d = 0; d < D; ++d) {
    vf qv[NV];
    for (int v = 0; v < NV; ++v) qv[v] = load(qp + d * rp + v * kLanes);
    for (int m = 0; m < MR; ++m) {
      vf kb = splat(kp[m * ldk + d]);
      for (int v = 0; v < NV; ++v) acc[m][v] += kb * qv[v];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) store(s + (j0 + m) * rp + r0 + v * kLanes, acc[m][v]);
}

void qk_block(const float* K, int64_t ldk, const float* qt, int rp, int D, int nk, float* s) {
  // nk is a multiple of kKeyPad (8); rp a multiple of kLanes.  Register tiles of
  // up to 24 accumulators: 6 keys x 4 row vectors, 8 keys x 1-2 row vectors.
  const int rv = rp / kLanes;
  for (int v0 = 0; v0 < rv; v0 += 4) {
    const int nv = std::min(4, rv - v0);
    const int r0 = v0 * kLanes;
    if (nv <= 2) {
      for (int j = 0; j < nk; j += 8) {
        if (nv == 1)
          qk_tile<8, 1>(K, ldk, qt, rp, D, j, r0, s);
        else
          qk_tile<8, 2>(K, ldk, qt, rp, D, j, r0, s);
      }
      continue;
    }
    int j = 0;
    for (; j + 6 <= nk; j += 6) {
      if (nv == 3)
        qk_tile<6, 3>(K, ldk, qt, rp, D, j, r0, s);
      else
        qk_tile<6, 4>(K, ldk, qt, rp, D, j, r0, s);
    }
    for (; j < nk; j += 2) {  // nk even: 0, 2 or 4 keys left
      if (nv == 3)
        qk_tile<2, 3>(K, ldk, qt, rp, D, j, r0, s);
      else
        qk_tile<2, 4>(K, ldk, qt, rp, D, j, r0, s);
    }
  }
}

// Few rows (decode: R <= kLanes / 2): the row-vector tile would be mostly padding,
// so scores are dot products along D instead (2 keys x R rows of accumulators,
// reduced horizontally).  S^T[j][r] for r < R; other lanes are left untouched.

template <int R>
void qk_dot_block(const float* K, int64_t ldk, const float* q, int D, int nk, int rp, float* s) {
  // q: [R][D] row-major fp32 (pre-scaled).  nk is even.
  for (int j = 0; j < nk; j += 2) {
    vf acc[2][R] = {};
    const float* k0 = K + j * ldk;
    const float* k1 = k0 + ldk;
    for (int d = 0; d < D; d += kLanes) {
      const vf a = load(k0 + d), b = load(k1 + d);
      for (int r = 0; r < R; ++r) {
        const vf qv = load(q + r * D + d);
        acc[0][r] += a * qv;
        acc[1][r] += b * qv;
      }
    }
    for (int r = 0; r < R; ++r) {
      s[j * rp + r] = hsum(acc[0][r]);
      s[(j + 1) * rp + r] = hsum(acc[1][r]);
    }
  }
}

void qk_dot(int R, const float* K, int64_t ldk, const float* q, int D, int nk, int rp, float* s) {
  switch (R) {
    case 1: qk_dot_block<1>(K, ldk, q, D, nk, rp, s); break;
    case 2: qk_dot_block<2>(K, ldk, q, D, nk, rp, s); break;
    case 3: qk_dot_block<3>(K, ldk, q, D, nk, rp, s); break;
    case 4: qk_dot_block<4>(K, ldk, q, D, nk, rp, s); break;
    case 5: qk_dot_block<5>(K, ldk, q, D, nk, rp, s); break;
    case 6: qk_dot_block<6>(K, ldk, q, D, nk, rp, s); break;
    case 7: qk_dot_block<7>(K, ldk, q, D, nk, rp, s); break;
    default: qk_dot_block<8>(K, ldk, q, D, nk, rp, s); break;
  }
}

// O[r0 .. r0+MR)[c0 .. c0 + NV*kLanes) += sum_j P^T[j][r] * V[j][c].
template <int MR, int NV>
inline void pv_tile(const float* p, int rp, const float* V, int64_t ldv, int nk, float* o, int D, int r0, int c0) {
  vf acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = load(o + (r0 + m) * D + c0 + v * kLanes);
  for (int j = 0; j < nk; ++j) {
    vf vv[NV];
    for (int v = 0; v < NV; ++v) vv[v] = load(V + j * ldv + c0 + v * kLanes);
    const float* pj = p + j * rp + r0;
    for (int m = 0; m < MR; ++m) {
      vf pb = splat(pj[m]);
      for (int v = 0; v < NV; ++v) acc[m][v] += pb * vv[v];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) store(o + (r0 + m) * D + c0 + v * kLanes, acc[m][v]);
}

template <int MR>
inline void pv_rows(const float* p, int rp, const float* V, int64_t ldv, int nk, float* o, int D, int r0) {
  const int dv = D / kLanes;
  if (MR <= 4 && (dv == 5 || dv == 6)) {  // one chunk of 20-24 accumulators
    if (dv == 5)
      pv_tile<MR, 5>(p, rp, V, ldv, nk, o, D, r0, 0);
    else
      pv_tile<MR, 6>(p, rp, V, ldv, nk, o, D, r0, 0);
    return;
  }
  for (int v0 = 0; v0 < dv; v0 += 4) {
    switch (std::min(4, dv - v0)) {
      case 1: pv_tile<MR, 1>(p, rp, V, ldv, nk, o, D, r0, v0 * kLanes); break;
      case 2: pv_tile<MR, 2>(p, rp, V, ldv, nk, o, D, r0, v0 * kLanes); break;
      case 3: pv_tile<MR, 3>(p, rp, V, ldv, nk, o, D, r0, v0 * kLanes); break;
      default: pv_tile<MR, 4>(p, rp, V, ldv, nk, o, D, r0, v0 * kLanes); break;
    }
  }
}

// rows is a multiple of 2 (and <= rp); rows past the task's R are padding.
void pv_block(const float* p, int rp, int rows, const float* V, int64_t ldv, int nk, float* o, int D) {
  const int dv = D / kLanes;
  int r0 = 0;
  if (dv != 5 && dv != 6)
    for (; r0 + 6 <= rows; r0 += 6) pv_rows<6>(p, rp, V, ldv, nk, o, D, r0);
  for (; r0 + 4 <= rows; r0 += 4) pv_rows<4>(p, rp, V, ldv, nk, o, D, r0);
  for (; r0 < rows; r0 += 2) pv_rows<2>(p, rp, V, ldv, nk, o, D, r0);
}

struct Scratch {
  std::vector<float> qt, qrows, kbuf, vbuf, s, o, m, l, alpha;
  std::vector<int32_t> qlim;
  std::vector<int64_t> mask_base;
};

struct TaskRange {
  int64_t b, hkv, g0, q0;
  int nh, nq, R;
  int64_t key_begin, key_end;
};

TaskRange task_range(const AttentionArgs& a, int64_t task) {
  const AttentionPlan& p = a.plan;
  const int64_t G = a.Hq / a.Hkv;
  TaskRange t{};
  const int64_t split = task % p.splits;
  int64_t rest = task / p.splits;
  const int64_t qb = rest % p.query_blocks;
  rest /= p.query_blocks;
  const int64_t hb = rest % p.head_blocks;
  rest /= p.head_blocks;
  t.hkv = rest % a.Hkv;
  t.b = rest / a.Hkv;
  t.g0 = hb * p.heads_per_task;
  t.nh = static_cast<int>(std::min<int64_t>(p.heads_per_task, G - t.g0));
  t.q0 = qb * p.block_q;
  t.nq = static_cast<int>(std::min<int64_t>(p.block_q, a.Lq - t.q0));
  t.R = t.nh * t.nq;
  t.key_begin = split * p.keys_per_split;
  t.key_end = std::min<int64_t>(a.Lk, t.key_begin + p.keys_per_split);
  if (a.mask_kind == MaskKind::Causal) {
    // Row (query i) sees keys j <= i + Lk - Lq; the block's last query bounds the range.
    t.key_end = std::min<int64_t>(t.key_end, t.q0 + t.nq + a.Lk - a.Lq);
  }
  return t;
}

// Runs one task; leaves the unnormalized accumulator O [RP][D], the running max m
// and sum l [RP] (base-2 domain) in `sc`.
void run_task(const AttentionArgs& a, const TaskRange& t, Scratch& sc) {
  const int D = static_cast<int>(a.D);
  const int64_t G = a.Hq / a.Hkv;
  const int R = t.R;
  const int rp = (R + kLanes - 1) / kLanes * kLanes;
  const int bk = a.plan.block_k;

  sc.qt.assign(size_t(D) * rp, 0.f);
  sc.o.assign(size_t(rp) * D, 0.f);
  sc.m.assign(rp, kNegInf);
  sc.l.assign(rp, 0.f);
  sc.alpha.resize(rp);
  // Few rows (decode): scores by dot products against row-major queries, since a
  // row-vector tile would be mostly padding.
  const bool dot = R <= std::min(8, kLanes / 2);
  if (dot) {
    sc.qrows.resize(size_t(R) * D);
    sc.s.assign(size_t(bk) * rp, 0.f);  // padded lanes stay finite
  } else {
    sc.s.resize(size_t(bk) * rp);
  }
  sc.qlim.resize(rp);

  // Queries -> QT, pre-scaled.
  const float qscale = a.scale * kLog2e;
  std::vector<float>& row = sc.kbuf;
  row.resize(size_t(bk) * D);
  for (int h = 0; h < t.nh; ++h) {
    const int64_t hq = t.hkv * G + t.g0 + h;
    for (int i = 0; i < t.nq; ++i) {
      const int r = h * t.nq + i;
      const int64_t base = t.b * a.q_stride[0] + hq * a.q_stride[1] + (t.q0 + i) * a.q_stride[2];
      convert_row(a.q, a.type, base, a.q_stride[3], D, row.data());
      for (int d = 0; d < D; ++d) sc.qt[size_t(d) * rp + r] = row[d] * qscale;
      if (dot)
        for (int d = 0; d < D; ++d) sc.qrows[size_t(r) * D + d] = row[d] * qscale;
    }
  }
  const bool causal = a.mask_kind == MaskKind::Causal;
  const bool has_mask = a.mask_kind == MaskKind::Bool || a.mask_kind == MaskKind::Additive;
  int64_t min_lim = std::numeric_limits<int64_t>::max();
  for (int r = 0; r < rp; ++r) {
    const int64_t lim = r < R ? t.q0 + (r % t.nq) + a.Lk - a.Lq : std::numeric_limits<int32_t>::max();
    sc.qlim[r] = static_cast<int32_t>(std::max<int64_t>(-1, std::min<int64_t>(lim, std::numeric_limits<int32_t>::max())));
    if (r < R) min_lim = std::min(min_lim, lim);
  }
  if (has_mask) {
    sc.mask_base.resize(R);
    for (int h = 0; h < t.nh; ++h)
      for (int i = 0; i < t.nq; ++i)
        sc.mask_base[h * t.nq + i] = t.b * a.mask_stride[0] + (t.hkv * G + t.g0 + h) * a.mask_stride[1] +
            (t.q0 + i) * a.mask_stride[2];
  }

  const int64_t kb_off = t.b * a.k_stride[0] + t.hkv * a.k_stride[1];
  const int64_t vb_off = t.b * a.v_stride[0] + t.hkv * a.v_stride[1];
  sc.vbuf.resize(size_t(bk) * D);
  const int rvecs = rp / kLanes;
  const int n_pv = (R + 1) / 2 * 2;

  for (int64_t k0 = t.key_begin; k0 < t.key_end; k0 += bk) {
    const int nk = static_cast<int>(std::min<int64_t>(bk, t.key_end - k0));
    const int nkp = (nk + kKeyPad - 1) / kKeyPad * kKeyPad;
    const float* K;
    const float* V;
    int64_t ldk, ldv;
    if (a.type == ElemType::Float32 && a.k_stride[3] == 1 && nk == nkp) {
      K = static_cast<const float*>(a.k) + kb_off + k0 * a.k_stride[2];
      ldk = a.k_stride[2];
    } else {
      for (int j = 0; j < nk; ++j)
        convert_row(a.k, a.type, kb_off + (k0 + j) * a.k_stride[2], a.k_stride[3], D, sc.kbuf.data() + size_t(j) * D);
      std::fill(sc.kbuf.begin() + size_t(nk) * D, sc.kbuf.begin() + size_t(nkp) * D, 0.f);
      K = sc.kbuf.data();
      ldk = D;
    }
    if (a.type == ElemType::Float32 && a.v_stride[3] == 1 && nk == nkp) {
      V = static_cast<const float*>(a.v) + vb_off + k0 * a.v_stride[2];
      ldv = a.v_stride[2];
    } else {
      for (int j = 0; j < nk; ++j)
        convert_row(a.v, a.type, vb_off + (k0 + j) * a.v_stride[2], a.v_stride[3], D, sc.vbuf.data() + size_t(j) * D);
      std::fill(sc.vbuf.begin() + size_t(nk) * D, sc.vbuf.begin() + size_t(nkp) * D, 0.f);
      V = sc.vbuf.data();
      ldv = D;
    }

    float* s = sc.s.data();
    if (dot)
      qk_dot(R, K, ldk, sc.qrows.data(), D, nkp, rp, s);
    else
      qk_block(K, ldk, sc.qt.data(), rp, D, nkp, s);

    // Masking.
    for (int j = nk; j < nkp; ++j)
      for (int r = 0; r < rp; ++r) s[j * rp + r] = kNegInf;
    if (causal && k0 + nk - 1 > min_lim) {
      for (int j = 0; j < nk; ++j) {
        const vi kpos = vi{} + static_cast<int32_t>(k0 + j);
        for (int v = 0; v < rvecs; ++v) {
          vi lim;
          std::memcpy(&lim, sc.qlim.data() + v * kLanes, sizeof(lim));
          float* sp = s + j * rp + v * kLanes;
          store(sp, kpos > lim ? splat(kNegInf) : load(sp));
        }
      }
    }
    if (has_mask) {
      const int64_t msk = a.mask_stride[3];
      for (int r = 0; r < R; ++r) {
        const int64_t base = sc.mask_base[r] + k0 * msk;
        if (a.mask_kind == MaskKind::Bool) {
          const uint8_t* mp = static_cast<const uint8_t*>(a.mask) + base;
          for (int j = 0; j < nk; ++j)
            if (!mp[j * msk]) s[j * rp + r] = kNegInf;
        } else {
          for (int j = 0; j < nk; ++j) s[j * rp + r] += load_scalar(a.mask, a.mask_type, base + j * msk) * kLog2e;
        }
      }
    }

    // Online softmax over the block, vectorized over rows.
    for (int v = 0; v < rvecs; ++v) {
      vf mx = splat(kNegInf);
      for (int j = 0; j < nkp; ++j) mx = vmax(mx, load(s + j * rp + v * kLanes));
      const vf m_old = load(sc.m.data() + v * kLanes);
      const vf m_new = vmax(m_old, mx);
      const vf m_use = m_new == splat(kNegInf) ? splat(0.f) : m_new;
      const vf alpha = exp2v(m_old - m_use);
      vf sum = {};
      for (int j = 0; j < nkp; ++j) {
        float* sp = s + j * rp + v * kLanes;
        vf p = exp2v(load(sp) - m_use);
        store(sp, p);
        sum += p;
      }
      store(sc.l.data() + v * kLanes, load(sc.l.data() + v * kLanes) * alpha + sum);
      store(sc.m.data() + v * kLanes, m_new);
      store(sc.alpha.data() + v * kLanes, alpha);
    }
    for (int r = 0; r < n_pv; ++r) {
      const float al = sc.alpha[r];
      if (al == 1.f) continue;
      float* o = sc.o.data() + size_t(r) * D;
      const vf av = splat(al);
      for (int c = 0; c < D; c += kLanes) store(o + c, load(o + c) * av);
    }
    pv_block(s, rp, n_pv, V, ldv, nkp, sc.o.data(), D);
  }
}

int64_t query_head(const AttentionArgs& a, const TaskRange& t, int r) {
  return t.hkv * (a.Hq / a.Hkv) + t.g0 + r / t.nq;
}

int64_t out_offset(const AttentionArgs& a, const TaskRange& t, int r) {
  return ((t.b * a.Hq + query_head(a, t, r)) * a.Lq + t.q0 + r % t.nq) * a.D;
}

// Row r's output scale from its (m, l): attention_row_scale with the row's sink.
float row_scale(const AttentionArgs& a, const TaskRange& t, int r, float m, float l) {
  const float sink_log2 = a.sinks ? a.sinks[query_head(a, t, r)] * kLog2e : kNegInf;
  return attention_row_scale(l, m, sink_log2);
}

void attention(const AttentionArgs& a) {
  const AttentionPlan& p = a.plan;
  const int D = static_cast<int>(a.D);
  if (p.splits == 1) {
    parallel_for(static_cast<int>(p.num_tasks), [&](int task) {
      thread_local Scratch sc;
      TaskRange t = task_range(a, task);
      run_task(a, t, sc);
      for (int r = 0; r < t.R; ++r)
        store_row(sc.o.data() + size_t(r) * D, row_scale(a, t, r, sc.m[r], sc.l[r]), a.out, a.type, out_offset(a, t, r), D);
    });
    return;
  }
  // Split-K: partial results of every task, then a merge per row block.
  const int rows = p.rows;
  std::vector<float> part_o(size_t(p.num_tasks) * rows * D);
  std::vector<float> part_ml(size_t(p.num_tasks) * rows * 2);
  parallel_for(static_cast<int>(p.num_tasks), [&](int task) {
    thread_local Scratch sc;
    TaskRange t = task_range(a, task);
    float* ml = part_ml.data() + size_t(task) * rows * 2;
    if (t.key_begin >= t.key_end) {
      for (int r = 0; r < t.R; ++r) {
        ml[2 * r] = kNegInf;
        ml[2 * r + 1] = 0.f;
      }
      return;
    }
    run_task(a, t, sc);
    std::memcpy(part_o.data() + size_t(task) * rows * D, sc.o.data(), sizeof(float) * t.R * D);
    for (int r = 0; r < t.R; ++r) {
      ml[2 * r] = sc.m[r];
      ml[2 * r + 1] = sc.l[r];
    }
  });
  const int64_t row_tasks = p.num_tasks / p.splits;
  parallel_for(static_cast<int>(row_tasks), [&](int rt) {
    TaskRange t = task_range(a, int64_t(rt) * p.splits);
    std::vector<float> acc(D);
    for (int r = 0; r < t.R; ++r) {
      float m = kNegInf;
      for (int sp = 0; sp < p.splits; ++sp) {
        const float ms = part_ml[(size_t(rt) * p.splits + sp) * rows * 2 + 2 * r];
        m = (ms > m || ms != ms) ? ms : m;  // NaN-sticky, as vmax
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      float l = 0.f;
      if (m != kNegInf) {
        for (int sp = 0; sp < p.splits; ++sp) {
          const size_t task = size_t(rt) * p.splits + sp;
          const float ms = part_ml[task * rows * 2 + 2 * r];
          if (ms == kNegInf && m == m) continue;
          const float w = std::exp2(ms - m);
          l += w * part_ml[task * rows * 2 + 2 * r + 1];
          const float* o = part_o.data() + (task * rows + r) * D;
          for (int c = 0; c < D; ++c) acc[c] += w * o[c];
        }
      }
      store_row(acc.data(), row_scale(a, t, r, m, l), a.out, a.type, out_offset(a, t, r), D);
    }
  });
}

} // namespace
} // namespace MARLIN_ISA

AttentionKernelTable MARLIN_CAT(attention_kernels_, MARLIN_ISA)() {
  return {MARLIN_STRINGIFY(MARLIN_ISA), &MARLIN_ISA::attention};
}

} // namespace marlin::cpu
