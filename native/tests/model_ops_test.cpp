// The decoder step's own operations (native/model/ops.h) against plain double-precision definitions:
// the BF16-weight GEMM of the lm_head in every body this CPU runs (within FP32 summation-order tolerance,
// and batch invariant: a row's outputs do not depend on M or on the thread split), the vectorized e^x and
// SwiGLU, the fused residual + RMSNorm, RoPE in two parts, and grouped attention.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/backends.h"
#include "kernels/cpu_features.h"
#include "model/ops.h"
#include "runtime/thread_pool.h"
#include "tests/check.h"

using namespace w4a8;

namespace {

uint16_t bf16Bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return (uint16_t)(bits >> 16);  // truncation is fine: any BF16 pattern is a valid weight
}

float bf16Value(uint16_t w) {
  const uint32_t bits = (uint32_t)w << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// y[m, n] of x [M, K] times BF16 weights w [N, K]ᵀ in double, and sum |x w| (the tolerance's scale).
double referenceDot(const std::vector<float>& x, const std::vector<uint16_t>& w, int m, int n, int K, double* magnitude) {
  double sum = 0;
  *magnitude = 0;
  for (int k = 0; k < K; ++k) {
    const double p = (double)x[(size_t)m * K + k] * bf16Value(w[(size_t)n * K + k]);
    sum += p;
    *magnitude += std::fabs(p);
  }
  return sum;
}

}  // namespace

TEST(bf16_weight_gemm_every_body_matches_double_and_is_batch_invariant) {
  const uint64_t seed = 20251130;
  std::fprintf(stderr, "  seed %llu\n", (unsigned long long)seed);
  w4a8test::Rng rng(seed);
  // Odd and even shapes: K not a multiple of 16 or 8 (masked / scalar tails), N not a multiple of the tile.
  const int shapes[][3] = {{1, 37, 19}, {3, 50, 64}, {7, 131, 100}, {16, 257, 200}, {13, 64, 515}, {40, 45, 96}, {70, 33, 40}};
  for (const auto& shape : shapes) {
    const int M = shape[0], N = shape[1], K = shape[2];
    std::vector<float> x((size_t)M * K);
    std::vector<uint16_t> w((size_t)N * K);
    for (float& v : x) v = rng.uniform(-2.0f, 2.0f);
    for (uint16_t& v : w) v = bf16Bits(rng.uniform(-1.0f, 1.0f));
    for (const char* isa : {"reference", "avx2", "avx512", "amx"}) {
      std::vector<float> y((size_t)M * N, NAN);
      if (!gemmBf16WeightsWith(isa, x.data(), M, w.data(), N, K, y.data())) continue;  // not on this CPU
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double magnitude;
          const double want = referenceDot(x, w, m, n, K, &magnitude);
          const double got = y[(size_t)m * N + n];
          CHECK(std::fabs(got - want) <= 1e-5 * magnitude + 1e-30, "%s M=%d N=%d K=%d y[%d,%d] = %g, want %g", isa, M, N, K, m,
                n, got, want);
        }
      // AMX tiles (M >= 8) give any batch of 8 or more the same bits: the first 8 rows alone against the batch.
      if (!std::strcmp(isa, "amx") && M >= 8) {
        std::vector<float> first8((size_t)8 * N);
        gemmBf16WeightsWith(isa, x.data(), 8, w.data(), N, K, first8.data());
        CHECK(std::memcmp(first8.data(), y.data(), first8.size() * sizeof(float)) == 0, "amx M=%d N=%d K=%d: first 8 rows differ",
              M, N, K);
        continue;
      }
      // Each row alone (M = 1) gives bit-identical outputs to the same row inside the batch.
      for (int m = 0; m < M; ++m) {
        std::vector<float> alone(N);
        gemmBf16WeightsWith(isa, x.data() + (size_t)m * K, 1, w.data(), N, K, alone.data());
        CHECK(std::memcmp(alone.data(), y.data() + (size_t)m * N, N * sizeof(float)) == 0, "%s M=%d N=%d K=%d row %d differs alone",
              isa, M, N, K, m);
      }
    }
  }
}

TEST(bf16_weight_gemm_on_amx_tiles_runs_them_and_declines_what_they_cannot_do_exactly) {
  if (!cpuFeatures().amxBackend()) {
    std::fprintf(stderr, "  no AMX on this CPU: skipped\n");
    return;
  }
  w4a8test::Rng rng(20261201);
  const int M = 9, N = 33, K = 300;
  std::vector<float> x((size_t)M * K), y((size_t)M * N);
  std::vector<uint16_t> w((size_t)N * K);
  for (float& v : x) v = rng.uniform(-3.0f, 3.0f);
  for (uint16_t& v : w) v = bf16Bits(rng.uniform(-1.0f, 1.0f));
  x[5] = 0x1.234567p-3f;  // all 24 significant bits: the three planes must carry them all
  CHECK(amx::gemmBf16WeightsPooled(globalThreadPool(), x.data(), M, w.data(), N, K, y.data()), "tiles declined plain inputs");
  double worst = 0;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double magnitude;
      const double want = referenceDot(x, w, m, n, K, &magnitude);
      worst = std::max(worst, std::fabs(y[(size_t)m * N + n] - want) / magnitude);
    }
  CHECK(worst <= 1e-6, "tiles: largest error %g of sum |x w|", worst);
  std::fprintf(stderr, "  tiles: largest error %.3g of sum |x w|\n", worst);
  // An infinite activation, and one whose third plane would be a BF16 subnormal: declined.
  std::vector<float> bad = x;
  bad[7] = INFINITY;
  CHECK(!amx::gemmBf16WeightsPooled(globalThreadPool(), bad.data(), M, w.data(), N, K, y.data()), "took an infinite x");
  bad = x;
  bad[7] = 0x1.000002p-120f;  // hi 2^-120, then 2^-143: an FP32 subnormal no plane can hold
  CHECK(!amx::gemmBf16WeightsPooled(globalThreadPool(), bad.data(), M, w.data(), N, K, y.data()), "took a subnormal plane");
}

TEST(fast_exp_and_swiglu_match_std_exp) {
  float worst = 0;
  for (float x = -110.0f; x <= 95.0f; x += 0.01171875f) {
    const double want = std::exp((double)x);
    const float got = fastExp(x);
    if (want > 3.4028234663852886e38) {
      CHECK(std::isinf(got), "e^%g = %g, want inf", x, got);
    } else if (want < 1.1754943508222875e-38) {
      CHECK(std::fabs(got - want) <= 1.5e-45 + 3e-7 * want, "e^%g = %g, want %g (subnormal range)", x, got, want);
    } else {
      worst = std::max(worst, (float)(std::fabs(got - want) / want));
    }
  }
  CHECK(worst <= 3e-7f, "largest relative error of fastExp %g", worst);
  CHECK(std::isnan(fastExp(NAN)), "e^NaN must be NaN");
  w4a8test::Rng rng(7);
  std::vector<float> gate(1003), up(1003);
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = rng.uniform(-30.0f, 30.0f), up[i] = rng.uniform(-3.0f, 3.0f);
  std::vector<float> out = gate;
  swiglu(out.data(), up.data(), out.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double want = gate[i] / (1.0 + std::exp(-(double)gate[i])) * up[i];
    CHECK(std::fabs(out[i] - want) <= 1e-6 * std::fabs(want) + 1e-30, "swiglu(%g, %g) = %g, want %g", gate[i], up[i], out[i], want);
  }
}

TEST(residual_rmsnorm_and_rope_in_parts_match_the_plain_ops) {
  w4a8test::Rng rng(11);
  const int rows = 3, dim = 40;
  std::vector<float> x(rows * dim), residual(rows * dim), weight(dim);
  for (float& v : x) v = rng.uniform(-2, 2);
  for (float& v : residual) v = rng.uniform(-2, 2);
  for (float& v : weight) v = rng.uniform(0.5f, 1.5f);
  std::vector<float> summed = x, want(rows * dim), fused = x, got(rows * dim);
  for (int i = 0; i < rows * dim; ++i) summed[i] += residual[i];
  rmsNorm(summed.data(), weight.data(), want.data(), rows, dim, 1e-5f);
  addRmsNorm(fused.data(), residual.data(), weight.data(), got.data(), 0, rows, dim, 1e-5f);
  CHECK(std::memcmp(fused.data(), summed.data(), summed.size() * 4) == 0, "fused residual add differs");
  CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0, "fused norm differs");

  const int heads = 3, headDim = 16, half = headDim / 2;
  std::vector<float> inverseFrequencies(half);
  for (int i = 0; i < half; ++i) inverseFrequencies[i] = std::pow(10000.0f, -2.0f * i / headDim);
  for (int position : {0, 1, 17, 1000}) {
    std::vector<float> a(heads * headDim), cosines(half), sines(half);
    for (float& v : a) v = rng.uniform(-1, 1);
    std::vector<float> b = a;
    rope(a.data(), heads, headDim, position, inverseFrequencies.data());
    ropeAngles(position, half, inverseFrequencies.data(), cosines.data(), sines.data());
    rotate(b.data(), heads, headDim, cosines.data(), sines.data());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0, "rope in parts differs at position %d", position);
    for (int i = 0; i < half; ++i) {
      const double angle = (float)position * inverseFrequencies[i];  // the FP32 angle, as the runtime takes it
      CHECK(std::fabs(cosines[i] - std::cos(angle)) <= 1e-6 && std::fabs(sines[i] - std::sin(angle)) <= 1e-6,
            "angle %d of position %d", i, position);
    }
  }
  // The rotation itself against double precision.
  std::vector<float> v(heads * headDim), cosines(half), sines(half);
  for (float& e : v) e = rng.uniform(-1, 1);
  for (int i = 0; i < half; ++i) cosines[i] = std::cos(0.3f * i), sines[i] = std::sin(0.3f * i);
  std::vector<float> rotated = v;
  rotate(rotated.data(), heads, headDim, cosines.data(), sines.data());
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < half; ++i) {
      const double x0 = v[h * headDim + i], x1 = v[h * headDim + i + half];
      CHECK(std::fabs(rotated[h * headDim + i] - (x0 * cosines[i] - x1 * sines[i])) <= 1e-6 &&
                std::fabs(rotated[h * headDim + i + half] - (x1 * cosines[i] + x0 * sines[i])) <= 1e-6,
            "rotation of head %d pair %d", h, i);
    }
}

// bf16: the cache holds BF16 keys and values (attendGroupBf16); the reference uses the same rounded values.
// isa: the body (attendGroupWith); the CPU may lack it (then nothing is checked and false is returned).
bool groupedAttentionMatchesDouble(bool bf16, const char* isa) {
  w4a8test::Rng rng(13);
  // 5 heads: a pass of 4 and a pass of 1; 3 heads: one pass with a spare head. Head width 20: one 16-lane run
  // and a tail; 80: two pairs of runs and one run. The values' slice sits inside wider rows (kvStride).
  struct Shape { int heads, headDim, kvStride; };
  for (const Shape shape : {Shape{5, 20, 50}, Shape{8, 64, 80}, Shape{3, 80, 80}}) {
    for (int positions : {1, 2, 9, 16, 33}) {
      const int heads = shape.heads, headDim = shape.headDim, kvStride = shape.kvStride;
      std::vector<float> q(heads * headDim), keys(positions * kvStride), values(positions * kvStride);
      for (float& v : q) v = rng.uniform(-1, 1);
      for (float& v : keys) v = rng.uniform(-1, 1);
      for (float& v : values) v = rng.uniform(-1, 1);
      const float scale = 1.0f / std::sqrt((float)headDim);
      if (bf16) {
        for (float& v : keys) v = bf16ToFloat(floatToBf16(v));
        for (float& v : values) v = bf16ToFloat(floatToBf16(v));
      }
      const size_t blockElements = (size_t)(positions + kKeyBlock - 1) / kKeyBlock * kKeyBlock * headDim;
      std::vector<float> keyBlocks(blockElements, 0.0f);
      std::vector<uint16_t> keyBlocks16(blockElements, 0), values16(values.size());
      for (int t = 0; t < positions; ++t) {
        storeKey(keyBlocks.data(), headDim, t, keys.data() + (size_t)t * kvStride);
        storeKey(keyBlocks16.data(), headDim, t, keys.data() + (size_t)t * kvStride);
      }
      floatToBf16Array(values.data(), values.size(), values16.data());
      std::vector<float> scores(heads * positions), out(heads * headDim);
      const void* k = bf16 ? (const void*)keyBlocks16.data() : (const void*)keyBlocks.data();
      const void* v = bf16 ? (const void*)values16.data() : (const void*)values.data();
      if (!attendGroupWith(isa, q.data(), heads, headDim, k, v, bf16, kvStride, positions, scale, scores.data(),
                           out.data()))
        return false;
      for (int h = 0; h < heads; ++h) {
        std::vector<double> p(positions);
        double maxScore = -1e300, total = 0;
        for (int t = 0; t < positions; ++t) {
          double s = 0;
          for (int i = 0; i < headDim; ++i) s += (double)q[h * headDim + i] * keys[t * kvStride + i];
          p[t] = s * scale;
          maxScore = std::max(maxScore, p[t]);
        }
        for (double& v : p) total += (v = std::exp(v - maxScore));
        for (int i = 0; i < headDim; ++i) {
          double want = 0;
          for (int t = 0; t < positions; ++t) want += p[t] / total * values[t * kvStride + i];
          CHECK(std::fabs(out[h * headDim + i] - want) <= 1e-5, "positions %d head %d [%d] = %g, want %g", positions, h, i,
                out[h * headDim + i], want);
        }
      }
    }
  }
  return true;
}

// Every body the CPU runs (the baseline always), and the one the backend picks.
void everyAttentionBody(bool bf16) {
  int ran = 0;
  for (const char* isa : {"reference", "avx2", "avx512"})
    if (groupedAttentionMatchesDouble(bf16, isa)) ++ran;
    else std::printf("    %s: not on this CPU\n", isa);
  CHECK(ran >= 1, "no attention body ran");
}
TEST(grouped_attention_matches_double) { everyAttentionBody(false); }
TEST(grouped_attention_over_a_bf16_cache_matches_double) { everyAttentionBody(true); }
