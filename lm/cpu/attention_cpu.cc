// Causal self-attention for XLA:CPU as two FFI custom calls (forward, backward).
//
// Why: on CPU, attention written in jnp becomes many small batched matmuls and
// elementwise passes over (T, S) score matrices; each is a separate XLA op
// with its own memory traffic and thread-pool round trip. Here one task owns
// a (batch, head, query block) in the forward and a (batch, kv head) in the
// backward, keeps its score block in cache, and recomputes the probabilities
// from the saved log-sum-exp in the backward (flash-attention style), so the
// (T, S) matrices never reach memory. Tasks run on XLA's intra-op thread pool.
//
// Layouts are the model's own: q (B, T, H, D), k/v (B, T, K, D), out like q,
// lse (B, H, T) float32. Grouped-query attention: query head h reads kv head
// h / (H / K). float32 only; lm/cpu/attention.py routes everything else to jnp.
//
// Packed rows (documents or conversations laid end to end): starts (B, T) int32
// gives, per query, the first position of its segment; it sees keys
// [starts[t], t]. All zeros is plain causal attention. A query block skips the
// keys before the earliest start among its rows.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRows = 8;
#else
constexpr int kLanes = 8;
constexpr int kRows = 4;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef float UnalignedVec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));

inline Vec Load(const float* p) { return *reinterpret_cast<const UnalignedVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UnalignedVec*>(p) = v; }
inline Vec Splat(float x) { return Vec{} + x; }

// exp(x) for x <= 88.7, to about 1 ulp (Cephes' expf: x = n ln2 + r, |r| <= ln2/2, 2^n
// built in the exponent bits). Inputs below -87.3 give ~1e-38 instead of 0; callers zero
// the masked entries themselves.
inline Vec Exp(Vec x) {
  typedef int32_t IVec __attribute__((vector_size(sizeof(Vec))));
  x = x < Splat(-87.33654f) ? Splat(-87.33654f) : x;
  const Vec magic = Splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec n = (x * 1.44269504088896341f + magic) - magic;
  const Vec r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  Vec p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  return p * reinterpret_cast<const Vec&>(bits);
}

float HorizontalMax(Vec v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}

float HorizontalSum(Vec v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

float RowMax(const float* x, int64_t n) {
  Vec m = Splat(-std::numeric_limits<float>::infinity());
  int64_t s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    const Vec v = Load(x + s);
    m = v > m ? v : m;
  }
  float out = HorizontalMax(m);
  for (; s < n; ++s) out = std::max(out, x[s]);
  return out;
}

// x[s] = exp(x[s] * mul - sub) for s < n, zero for n <= s < S; returns the sum.
float ExpRow(float* x, int64_t n, int64_t S, float mul, float sub) {
  Vec sum{};
  int64_t s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    const Vec e = Exp(Load(x + s) * mul - sub);
    Store(x + s, e);
    sum += e;
  }
  float out = HorizontalSum(sum);
  for (; s < n; ++s) out += (x[s] = std::exp(x[s] * mul - sub));
  std::fill(x + n, x + S, 0.0f);
  return out;
}

float Dot(const float* a, const float* b, int64_t n) {
  Vec acc{};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += Load(a + i) * Load(b + i);
  float out = HorizontalSum(acc);
  for (; i < n; ++i) out += a[i] * b[i];
  return out;
}

// One register tile: C[r, 0:2V] (+)= sum_k Ap[k, r] * Bp[k, 0:2V], r < MR, from packed panels
// (Ap: Kd x MR, Bp: Kd x 2V, both contiguous), so every load is sequential.
template <int MR>
inline void Tile(int64_t Kd, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  Vec acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = accumulate ? Load(C + r * ldc) : Vec{};
    acc[r][1] = accumulate ? Load(C + r * ldc + kLanes) : Vec{};
  }
  for (int64_t k = 0; k < Kd; ++k) {
    const Vec b0 = Load(Bp + k * 2 * kLanes), b1 = Load(Bp + k * 2 * kLanes + kLanes);
    for (int r = 0; r < MR; ++r) {
      const float a = Ap[k * MR + r];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    Store(C + r * ldc, acc[r][0]);
    Store(C + r * ldc + kLanes, acc[r][1]);
  }
}

// C[i, j] (+)= sum_k A[i * a_rs + k * a_cs] * B[k * ldb + j]  for i < M, j < N, k < Kd.
// A may be any strided view (a transposed one is a_rs = 1); B and C rows are contiguous.
// Operands are packed into panels first (as BLAS does): strided rows of a few KiB
// would otherwise fall into the same L1 sets and evict each other.
void Gemm(int64_t M, int64_t N, int64_t Kd, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  constexpr int64_t NR = 2 * kLanes;
  thread_local std::vector<float> a_pack, b_pack;
  a_pack.resize(M * Kd);
  b_pack.resize(Kd * NR);
  // Rows go in chunks of kRows, then 4, 2, 1; chunk [i, i + mr) is packed Kd x mr at a_pack + i * Kd.
  auto for_chunks = [M](auto fn) {
    for (int64_t i = 0, mr; i < M; i += mr) {
      mr = M - i >= kRows ? kRows : M - i >= 4 ? 4 : M - i >= 2 ? 2 : 1;
      fn(i, mr);
    }
  };
  for_chunks([&](int64_t i, int64_t mr) {
    float* dst = a_pack.data() + i * Kd;
    for (int64_t k = 0; k < Kd; ++k)
      for (int64_t r = 0; r < mr; ++r) dst[k * mr + r] = A[(i + r) * a_rs + k * a_cs];
  });
  const int64_t n_vec = N - N % NR;
  for (int64_t j = 0; j < n_vec; j += NR) {
    for (int64_t k = 0; k < Kd; ++k) std::memcpy(b_pack.data() + k * NR, B + k * ldb + j, NR * sizeof(float));
    for_chunks([&](int64_t i, int64_t mr) {
      const float* ap = a_pack.data() + i * Kd;
      float* c = C + i * ldc + j;
      if (mr == kRows) {
        Tile<kRows>(Kd, ap, b_pack.data(), c, ldc, accumulate);
      } else if (mr == 4) {
        Tile<4>(Kd, ap, b_pack.data(), c, ldc, accumulate);
      } else if (mr == 2) {
        Tile<2>(Kd, ap, b_pack.data(), c, ldc, accumulate);
      } else {
        Tile<1>(Kd, ap, b_pack.data(), c, ldc, accumulate);
      }
    });
  }
  for (int64_t j = n_vec; j < N; ++j)  // columns past the last full panel: scalar
    for (int64_t i = 0; i < M; ++i) {
      float acc = accumulate ? C[i * ldc + j] : 0.0f;
      for (int64_t k = 0; k < Kd; ++k) acc += A[i * a_rs + k * a_cs] * B[k * ldb + j];
      C[i * ldc + j] = acc;
    }
}

// Runs fn(0..n-1) on the calling thread and XLA's intra-op pool; returns when all are done.
// Tasks that the pool starts late find nothing left and touch only the shared counters.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n = 0;
    const std::function<void(int64_t)>* fn = nullptr;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  shared->n = n;
  shared->fn = &fn;
  auto work = [](Shared& s) {
    for (int64_t i; (i = s.next.fetch_add(1)) < s.n;) {
      (*s.fn)(i);
      if (s.done.fetch_add(1) + 1 == s.n) {
        std::lock_guard<std::mutex> lock(s.mu);
        s.cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t w = 0; w < helpers; ++w) pool.Schedule([shared, work] { work(*shared); });
  work(*shared);
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == n; });
}

constexpr int64_t kBlock = 64;  // query rows per block

struct Dims {
  int64_t B, T, H, K, D;
  float scale;
};

Dims GetDims(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k) {
  auto qd = q.dimensions(), kd = k.dimensions();
  return {qd[0], qd[1], qd[2], kd[2], qd[3], 1.0f / std::sqrt(static_cast<float>(qd[3]))};
}

// Transposes rows [0, S) of a (S, D) matrix with row stride ld into (D, S) contiguous.
void Transpose(const float* x, int64_t S, int64_t D, int64_t ld, float* out) {
  for (int64_t s = 0; s < S; ++s)
    for (int64_t d = 0; d < D; ++d) out[d * S + s] = x[s * ld + d];
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> starts, ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> lse) {
  const Dims d = GetDims(q, k);
  const int64_t n_blocks = (d.T + kBlock - 1) / kBlock, G = d.H / d.K;
  const int64_t q_ld = d.H * d.D, kv_ld = d.K * d.D;
  const float *Q = q.typed_data(), *Kp = k.typed_data(), *V = v.typed_data();
  const int32_t* St = starts.typed_data();
  float *O = out->typed_data(), *L = lse->typed_data();
  ParallelFor(pool, d.B * d.H * n_blocks, [&](int64_t task) {
    const int64_t blk = n_blocks - 1 - task % n_blocks;  // longest blocks first
    const int64_t h = (task / n_blocks) % d.H, b = task / (n_blocks * d.H);
    const int64_t t0 = blk * kBlock, t1 = std::min(d.T, t0 + kBlock), rows = t1 - t0;
    const int32_t* st = St + b * d.T + t0;
    // Keys [k0, t1): no row of the block sees a key before its segments' earliest start.
    const int64_t k0 = *std::min_element(st, st + rows), S = t1 - k0;
    thread_local std::vector<float> kt, p;
    kt.resize(d.D * S);
    p.resize(rows * S);
    const float* k_bh = Kp + (b * d.T + k0) * kv_ld + (h / G) * d.D;
    const float* v_bh = V + (b * d.T + k0) * kv_ld + (h / G) * d.D;
    const float* q_blk = Q + (b * d.T + t0) * q_ld + h * d.D;
    float* o_blk = O + (b * d.T + t0) * q_ld + h * d.D;
    float* l_blk = L + (b * d.H + h) * d.T + t0;
    Transpose(k_bh, S, d.D, kv_ld, kt.data());
    Gemm(rows, S, d.D, q_blk, q_ld, 1, kt.data(), S, p.data(), S, false);  // scores
    float inv_sum[kBlock];
    for (int64_t r = 0; r < rows; ++r) {  // unnormalised probabilities; rows scaled after PV
      float* row = p.data() + r * S;
      const int64_t lo = st[r] - k0, n = t0 + r + 1 - k0;  // keys [lo, n) of this block are visible
      const float mx = RowMax(row + lo, n - lo) * d.scale;
      const float sum = ExpRow(row + lo, n - lo, S - lo, d.scale, mx);
      std::fill(row, row + lo, 0.0f);
      inv_sum[r] = 1.0f / sum;
      l_blk[r] = mx + std::log(sum);
    }
    Gemm(rows, d.D, S, p.data(), S, 1, v_bh, kv_ld, o_blk, q_ld, false);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < d.D; ++c) o_blk[r * q_ld + c] *= inv_sum[r];
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> starts, ffi::Buffer<ffi::F32> out,
                    ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  const Dims d = GetDims(q, k);
  const int64_t G = d.H / d.K, T = d.T;
  const int64_t q_ld = d.H * d.D, kv_ld = d.K * d.D;
  const float *Q = q.typed_data(), *Kp = k.typed_data(), *V = v.typed_data();
  const float *O = out.typed_data(), *L = lse.typed_data(), *dO = dout.typed_data();
  const int32_t* St = starts.typed_data();
  float *dQ = dq->typed_data(), *dK = dk->typed_data(), *dV = dv->typed_data();
  // One task per (batch, kv head): it owns that head's dK and dV rows.
  ParallelFor(pool, d.B * d.K, [&](int64_t task) {
    const int64_t kh = task % d.K, b = task / d.K;
    thread_local std::vector<float> kt, vt, p, dp, dk_acc, dv_acc;
    kt.resize(d.D * T);
    vt.resize(d.D * T);
    p.resize(kBlock * T);
    dp.resize(kBlock * T);
    dk_acc.assign(T * d.D, 0.0f);
    dv_acc.assign(T * d.D, 0.0f);
    const float* k_b = Kp + b * T * kv_ld + kh * d.D;
    const float* v_b = V + b * T * kv_ld + kh * d.D;
    Transpose(k_b, T, d.D, kv_ld, kt.data());
    Transpose(v_b, T, d.D, kv_ld, vt.data());
    for (int64_t h = kh * G; h < (kh + 1) * G; ++h) {
      for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
        const int64_t t1 = std::min(T, t0 + kBlock), rows = t1 - t0;
        const int32_t* st = St + b * T + t0;
        const int64_t k0 = *std::min_element(st, st + rows), S = t1 - k0;  // keys [k0, t1)
        const int64_t off = (b * T + t0) * q_ld + h * d.D;
        const float *q_blk = Q + off, *o_blk = O + off, *do_blk = dO + off;
        const float* l_blk = L + (b * d.H + h) * T + t0;
        // The transposed K and V are (D, T); columns [k0, t1), row stride T.
        Gemm(rows, S, d.D, q_blk, q_ld, 1, kt.data() + k0, T, p.data(), S, false);
        Gemm(rows, S, d.D, do_blk, q_ld, 1, vt.data() + k0, T, dp.data(), S, false);
        for (int64_t r = 0; r < rows; ++r) {  // P from the saved log-sum-exp; dS = P (dP - rowsum(dO O))
          const float dd = Dot(do_blk + r * q_ld, o_blk + r * q_ld, d.D);
          float *pr = p.data() + r * S, *dsr = dp.data() + r * S;
          const int64_t lo = st[r] - k0, n = t0 + r + 1 - k0;
          ExpRow(pr + lo, n - lo, S - lo, d.scale, l_blk[r]);
          std::fill(pr, pr + lo, 0.0f);
          int64_t s = lo;  // dS carries the score scale, so dQ and dK need no extra pass
          for (; s + kLanes <= n; s += kLanes)
            Store(dsr + s, Load(pr + s) * (Load(dsr + s) - dd) * d.scale);
          for (; s < n; ++s) dsr[s] = pr[s] * (dsr[s] - dd) * d.scale;
          std::fill(dsr, dsr + lo, 0.0f);
          std::fill(dsr + n, dsr + S, 0.0f);
        }
        // dV[k0:t1] += Pᵀ dO;  dK[k0:t1] += dSᵀ Q;  dQ = dS K[k0:t1].
        Gemm(S, d.D, rows, p.data(), 1, S, do_blk, q_ld, dv_acc.data() + k0 * d.D, d.D, true);
        Gemm(S, d.D, rows, dp.data(), 1, S, q_blk, q_ld, dk_acc.data() + k0 * d.D, d.D, true);
        Gemm(rows, d.D, S, dp.data(), S, 1, k_b + k0 * kv_ld, kv_ld, dQ + off, q_ld, false);
      }
    }
    for (int64_t s = 0; s < T; ++s) {
      std::memcpy(dK + (b * T + s) * kv_ld + kh * d.D, dk_acc.data() + s * d.D, d.D * sizeof(float));
      std::memcpy(dV + (b * T + s) * kv_ld + kh * d.D, dv_acc.data() + s * d.D, d.D * sizeof(float));
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LmCausalAttentionFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LmCausalAttentionBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
