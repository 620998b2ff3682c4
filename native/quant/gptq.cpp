#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>

#include "runtime/thread_pool.h"

namespace w4a8 {
namespace {

// In place: the lower triangle of a [n, n] (row-major, symmetric) becomes L with a = L Lᵀ; row by row,
// so every inner product runs over two contiguous rows. False if a is not positive definite.
// Σ_{k < count} a[k] b[k] with four partial sums (a reduction the compiler will not reorder by itself).
double dot(const double* a, const double* b, int count) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int k = 0;
  for (; k + 4 <= count; k += 4) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
  }
  for (; k < count; ++k) s0 += a[k] * b[k];
  return (s0 + s1) + (s2 + s3);
}

bool choleskyLower(std::vector<double>& a, int n) {
  for (int i = 0; i < n; ++i) {
    double* rowI = a.data() + (size_t)i * n;
    for (int j = 0; j <= i; ++j) {
      const double* rowJ = a.data() + (size_t)j * n;
      const double sum = rowI[j] - dot(rowI, rowJ, j);
      if (j == i) {
        if (!(sum > 0.0) || !std::isfinite(sum)) return false;
        rowI[i] = std::sqrt(sum);
      } else {
        rowI[j] = sum / rowJ[j];
      }
    }
  }
  return true;
}

// Indices 0..count-1 by value descending (ties: lower index first).
std::vector<int> sortedDescending(const double* value, int count) {
  std::vector<int> index(count);
  std::iota(index.begin(), index.end(), 0);
  std::stable_sort(index.begin(), index.end(), [&](int a, int b) { return value[a] > value[b]; });
  return index;
}

// The composite (or INT4-only) values of the 16 codes of one group, in real units (times s_c).
void groupValues(float channelScale, Int4GroupParams params, const GptqOptions& options, float* values) {
  for (int q = 0; q < 16; ++q) {
    const float v = int4GroupValue(params.scale, params.zero, q);
    values[q] = channelScale * (options.quantizer == SweepQuantizer::Composite
                                    ? fp8Decode(fp8Encode(v, options.pack.format), options.pack.format)
                                    : v);
  }
}

int clampCode(float x) { return (int)std::min(15.0f, std::max(0.0f, x)); }

// The code of the nearest grid value to x (values[] of the 16 codes, monotone in q): RTN's code, then
// for the composite grid its neighbours, which FP8 rounding can make nearer.
int nearestCode(float x, float groupScale, int zero, const float* values, SweepQuantizer quantizer) {
  int q = clampCode(std::nearbyint(x / groupScale) + (float)zero);
  if (quantizer == SweepQuantizer::Composite) {
    const int q0 = q;
    for (int c = std::max(0, q0 - 2); c <= std::min(15, q0 + 2); ++c)
      if (std::fabs(x - values[c]) < std::fabs(x - values[q])) q = c;
  }
  return q;
}

// Group parameters from channel-scaled weights v[0..count): RTN's (chooseInt4GroupParams) and, with
// options.searchScales, the same rule on the range shrunk by α = 1 - 0.02 i (i = 1..15); the one
// whose grid (composite or INT4, as the sweep sees it) gives the least Σ importance_i (v_i - ŵ_i)² wins.
Int4GroupParams chooseGroupParams(const float* v, const float* importance, int count, const GptqOptions& options) {
  Int4GroupParams best = chooseInt4GroupParams(v, count, options.pack);
  if (!options.searchScales) return best;
  float lo = 0.0f, hi = 0.0f;
  for (int i = 0; i < count; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  double bestError = INFINITY;
  float values[16];
  for (int step = 0; step <= 15; ++step) {
    const float alpha = 1.0f - 0.02f * (float)step;
    const float range[2] = {alpha * lo, alpha * hi};
    const Int4GroupParams params = step == 0 ? best : chooseInt4GroupParams(range, 2, options.pack);
    groupValues(1.0f, params, options, values);
    double error = 0;
    for (int i = 0; i < count; ++i) {
      const int q = nearestCode(v[i], params.scale, params.zero, values, options.quantizer);
      const double e = (double)v[i] - values[q];
      error += importance[i] * e * e;
    }
    if (error < bestError) {
      bestError = error;
      best = params;
    }
  }
  return best;
}

}  // namespace

std::vector<int> garOrder(const double* diag, int cols, int groupSize) {
  const int groups = cols / groupSize;
  std::vector<double> groupMax(groups, -INFINITY);
  for (int k = 0; k < cols; ++k) groupMax[k / groupSize] = std::max(groupMax[k / groupSize], diag[k]);
  std::vector<int> order;
  order.reserve(cols);
  for (int g : sortedDescending(groupMax.data(), groups))
    for (int i : sortedDescending(diag + (size_t)g * groupSize, groupSize)) order.push_back(g * groupSize + i);
  return order;
}

std::vector<int> actOrder(const double* diag, int cols) { return sortedDescending(diag, cols); }

GptqFactor prepareGptq(const double* hessian, int hessianSize, int cols, const GptqOptions& options) {
  const int n = cols;
  if (hessianSize > cols || hessianSize < 1) throw std::runtime_error("hessian size must be in [1, cols]");
  // Real inputs with a non-zero second moment are live; padding and always-zero inputs get H_ii = 1 and
  // no coupling (their rows and columns of H are zero already, or are made so here).
  std::vector<char> live(n, 0);
  double diagSum = 0;
  int liveCount = 0;
  for (int k = 0; k < hessianSize; ++k) {
    const double d = hessian[(size_t)k * hessianSize + k];
    if (!std::isfinite(d)) throw std::runtime_error("the Hessian holds a non-finite value");
    if (d > 0) {
      live[k] = 1;
      diagSum += d;
      ++liveCount;
    }
  }
  const double meanDiag = liveCount ? diagSum / liveCount : 1.0;

  // Sweep order, from the diagonal (non-live columns last: they are decoupled, so where they go
  // changes nothing, but last keeps the order easy to read).
  std::vector<double> diag(n);
  for (int k = 0; k < n; ++k) diag[k] = live[k] ? hessian[(size_t)k * hessianSize + k] : -1.0;
  GptqFactor factor;
  factor.cols = n;
  if (options.order == SweepOrder::Gar) factor.order = garOrder(diag.data(), n, options.pack.groupSize);
  else if (options.order == SweepOrder::ActOrder) factor.order = actOrder(diag.data(), n);
  else {
    factor.order.resize(n);
    std::iota(factor.order.begin(), factor.order.end(), 0);
  }
  const std::vector<int>& order = factor.order;

  // U = upper Cholesky factor of (P H Pᵀ)⁻¹. With J the reversal, if J P H Pᵀ J = L Lᵀ then
  // (P H Pᵀ)⁻¹ = (J L⁻ᵀ J)(J L⁻¹ J) = Uᵀ U with U = J L⁻¹ J upper triangular: one Cholesky and one
  // triangular inverse. a[i][j] = H[order[n-1-i]][order[n-1-j]] (+ λ on the live diagonal).
  double damp = options.damp;
  std::vector<double> a((size_t)n * n);
  for (int attempt = 0;; ++attempt) {
    const double lambda = damp * meanDiag;
    for (int i = 0; i < n; ++i) {
      const int ci = order[n - 1 - i];
      for (int j = 0; j <= i; ++j) {
        const int cj = order[n - 1 - j];
        double v;
        if (!live[ci] || !live[cj]) v = ci == cj ? 1.0 : 0.0;
        else v = hessian[(size_t)ci * hessianSize + cj] + (ci == cj ? lambda : 0.0);
        a[(size_t)i * n + j] = v;
      }
    }
    if (choleskyLower(a, n)) break;
    if (damp >= 1.0 || attempt > 8)
      throw std::runtime_error("the Hessian is not positive definite even with damping " + std::to_string(damp));
    damp = damp > 0 ? damp * 10 : 1e-6;
  }
  factor.damp = damp;

  // Column j of L⁻¹ solves L y = e_j (forward substitution over contiguous rows of L); it is column
  // n-1-j of U read bottom-up: U[n-1-i][n-1-j] = y[i] for i >= j. Columns are independent: threaded.
  factor.u.assign((size_t)n * n, 0.0f);
  float* u = factor.u.data();
  globalThreadPool().parallelFor(n, 1, [&](int begin, int end) {
    std::vector<double> y(n);
    for (int j = begin; j < end; ++j) {
      for (int i = j; i < n; ++i) {
        const double* rowI = a.data() + (size_t)i * n;
        y[i] = ((i == j ? 1.0 : 0.0) - dot(rowI + j, y.data() + j, i - j)) / rowI[i];
        u[(size_t)(n - 1 - i) * n + (n - 1 - j)] = (float)y[i];
      }
    }
  });
  return factor;
}

double gptqQuantizeRows(const float* w, int cols, const GptqFactor& factor, const GptqOptions& options,
                        Int4WeightsMut out, int rowBegin, int rowEnd) {
  const int K = cols, G = options.pack.groupSize, groups = K / G;
  const float target = int4ChannelTarget(options.pack);  // FP8_MAX, or less with power-of-two scales
  const std::vector<int>& order = factor.order;
  const float* u = factor.u.data();
  std::vector<int> position(K);  // position[k] = the step at which column k is visited
  for (int p = 0; p < K; ++p) position[order[p]] = p;
  std::vector<int> groupFirstStep(groups, K);
  for (int p = 0; p < K; ++p) groupFirstStep[order[p] / G] = std::min(groupFirstStep[order[p] / G], p);
  const bool staticGroups = options.order == SweepOrder::ActOrder;
  // How much an error on column k costs once the sweep has compensated what it can: 1 / U_pp² (OBS).
  std::vector<float> importance(K);
  for (int k = 0; k < K; ++k) {
    const float d = u[(size_t)position[k] * K + position[k]];
    importance[k] = 1.0f / (d * d);
  }

  // A tile of rows goes through the sweep together, so each row of U is read once per tile.
  constexpr int kTile = 8;
  std::vector<float> work((size_t)kTile * K);        // the tile's rows in sweep order, error-updated
  std::vector<float> values((size_t)kTile * groups * 16);  // composite values of each group's codes
  std::vector<float> channelScale(kTile), err(kTile), scaled(G);
  double loss = 0;

  for (int tileBegin = rowBegin; tileBegin < rowEnd; tileBegin += kTile) {
    const int R = std::min(kTile, rowEnd - tileBegin);
    auto setGroup = [&](int r, int g, Int4GroupParams params) {
      const int n = tileBegin + r;
      out.groupScales[(size_t)n * groups + g] = params.scale;
      out.zeros[(size_t)n * groups + g] = (uint8_t)params.zero;
      groupValues(channelScale[r], params, options, &values[((size_t)r * groups + g) * 16]);
    };
    for (int r = 0; r < R; ++r) {
      const float* row = w + (size_t)(tileBegin + r) * K;
      float amax = 0.0f;
      for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
      channelScale[r] = usableScale(amax / target * kChannelHeadroom);
      out.channelScales[tileBegin + r] = channelScale[r];
      float* rowWork = &work[(size_t)r * K];
      for (int p = 0; p < K; ++p) rowWork[p] = row[order[p]];
      if (staticGroups) {
        for (int g = 0; g < groups; ++g) {
          for (int i = 0; i < G; ++i) scaled[i] = row[g * G + i] / channelScale[r];
          setGroup(r, g, chooseGroupParams(scaled.data(), &importance[(size_t)g * G], G, options));
        }
      }
    }
    for (int p = 0; p < K; ++p) {
      const int column = order[p], g = column / G;
      if (!staticGroups && groupFirstStep[g] == p) {
        for (int r = 0; r < R; ++r) {
          const float* rowWork = &work[(size_t)r * K];
          for (int i = 0; i < G; ++i) scaled[i] = rowWork[position[g * G + i]] / channelScale[r];
          setGroup(r, g, chooseGroupParams(scaled.data(), &importance[(size_t)g * G], G, options));
        }
      }
      const float d = u[(size_t)p * K + p];
      for (int r = 0; r < R; ++r) {
        const int n = tileBegin + r;
        const float x = work[(size_t)r * K + p];
        const float* v = &values[((size_t)r * groups + g) * 16];
        const float groupScale = out.groupScales[(size_t)n * groups + g];
        const int zero = out.zeros[(size_t)n * groups + g];
        // v[] is in real units: compare x there, but take RTN's code from x / s_c as packInt4Rows does.
        int q = clampCode(std::nearbyint(x / channelScale[r] / groupScale) + (float)zero);
        if (options.quantizer == SweepQuantizer::Composite) {
          const int q0 = q;
          for (int c = std::max(0, q0 - 2); c <= std::min(15, q0 + 2); ++c)
            if (std::fabs(x - v[c]) < std::fabs(x - v[q])) q = c;
        }
        uint8_t& byte = out.codes[(size_t)n * (K / 2) + (column >> 1)];
        byte = (column & 1) ? (uint8_t)((byte & 0x0F) | (q << 4)) : (uint8_t)((byte & 0xF0) | q);
        err[r] = (x - v[q]) / d;
        loss += (double)err[r] * err[r];
      }
      const float* uRow = u + (size_t)p * K;
      for (int r = 0; r < R; ++r) {
        const float e = err[r];
        if (e == 0.0f) continue;
        float* rowWork = &work[(size_t)r * K];
        for (int j = p + 1; j < K; ++j) rowWork[j] -= e * uRow[j];
      }
    }
  }
  return loss;
}

GptqResult gptqQuantize(const float* w, int rows, int cols, const double* hessian, int hessianSize,
                        const GptqOptions& options, Int4WeightsMut out) {
  if (cols % options.pack.groupSize != 0) throw std::runtime_error("cols must be a multiple of the group size");
  const GptqFactor factor = prepareGptq(hessian, hessianSize, cols, options);
  std::mutex lossMutex;
  double loss = 0;
  globalThreadPool().parallelFor(rows, 8, [&](int begin, int end) {
    const double chunkLoss = gptqQuantizeRows(w, cols, factor, options, out, begin, end);
    std::lock_guard<std::mutex> lock(lossMutex);
    loss += chunkLoss;
  });
  return {factor.damp, loss};
}

}  // namespace w4a8
