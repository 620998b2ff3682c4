// GPTQ and DPQ (DESIGN.md §4): Hessian-aware INT4 packing of one linear layer W [rows = N, cols = K].
//
// The sweep visits the columns of W one at a time (in natural, GAR or act-order order), quantizes the
// column, and spreads its error over the columns not yet visited through the upper Cholesky factor U of
// H⁻¹ (H = 2 Σ xᵀx + λI over the calibration inputs x of this layer):
//   err[n]      = (W[n, p] - Ŵ[n, p]) / U[p, p]
//   W[n, j]    -= err[n] * U[p, j]            for every later step j > p
// Rows are independent given U, so they are split over the thread pool. What Ŵ is decides the method:
//   GPTQ (W4A8-GPTQ baseline)  Ŵ = s_c * s_g * (q - z): the INT4 grid alone. The FP8 rounding of the
//                              dequantized weight (what the kernels compute) is not seen by the sweep.
//   DPQ                        Ŵ = s_c * fp8(fl32(s_g * (q - z))): the composite quantizer, exactly what
//                              the kernels compute (DESIGN.md §1); q is the code whose composite value is
//                              nearest to the weight, and the composite error is what propagates.
// Per-group s_g, z are chosen (chooseInt4GroupParams, as RTN) from the error-updated weights of the group
// when the sweep reaches the group's first column. s_c = amax(W[n, :]) / int4ChannelTarget * kChannelHeadroom.
//
// The output is the canonical layout (quant/weights.h): codes, group scales and zeros are written at
// the natural positions whatever order the sweep used, so no kernel needs a permutation or gather.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/int4_pack.h"

namespace w4a8 {

enum class SweepQuantizer : uint8_t { Int4, Composite };  // GPTQ, DPQ

// The order in which the sweep visits the columns (the packed layout is always the natural one):
//   Natural   k = 0, 1, ..., K-1
//   Gar       group-aware reordering: groups by their largest diag(H), descending; the columns of a group
//             by their own diag(H), descending, and consecutive, so each group's parameters are chosen
//             from its error-updated weights when the sweep reaches it
//   ActOrder  plain GPTQ act-order: all columns by diag(H), descending. A group's columns are scattered
//             over the sweep, so its parameters are fixed up front from the original weights ("static
//             groups"); the codes keep the canonical layout and need no runtime gather.
enum class SweepOrder : uint8_t { Natural, Gar, ActOrder };

// s_c leaves this factor of headroom below FP8_MAX: the sweep's error feedback can push weights past
// the row's original amax, and a power-of-two factor changes no FP8 rounding (only where subnormals
// start, far below any group step), so the headroom costs nothing.
constexpr float kChannelHeadroom = 2.0f;

struct GptqOptions {
  Int4PackOptions pack;  // group size, symmetric, pow2 group scales, FP8 format of the weights
  SweepQuantizer quantizer = SweepQuantizer::Composite;
  SweepOrder order = SweepOrder::Natural;
  double damp = 0.01;    // λ = damp * mean(diag H) over the real inputs
  // Choose each group's (s_g, z) among RTN's range shrunk by 0..30% (16 candidates) by the least
  // importance-weighted error on the grid the sweep sees (importance 1 / U_pp², as OBS weighs errors).
  bool searchScales = false;
};

// The inverse-Hessian factor of a layer, shared by its rows.
struct GptqFactor {
  int cols = 0;             // K (padded to the group size)
  std::vector<int> order;   // order[p] = the column the sweep visits at step p
  std::vector<float> u;     // [cols, cols] row-major, U[p, j] for j >= p (steps, not columns): the upper
                            // Cholesky factor of (P H Pᵀ)⁻¹, P the sweep order; zero below the diagonal
  double damp = 0;          // the damping used: the requested one, raised ×10 until H + λI was positive definite
};

// hessian: [hessianSize, hessianSize] FP64, H = 2 Σ xᵀx over the layer's real inputs (hessianSize <= cols).
// Inputs hessianSize..cols-1 are padding (zero weights, fed zeros): they get H_ii = 1 and no coupling, so
// they neither take nor give error. A real input that was always zero (H_ii = 0) is treated the same way.
// Throws std::runtime_error if H stays indefinite even with λ = mean(diag H).
GptqFactor prepareGptq(const double* hessian, int hessianSize, int cols, const GptqOptions& options);

// The sweep for rows [rowBegin, rowEnd) of w [rows, cols] FP32, written to `out` (canonical layout).
// Returns Σ over those rows of Σ_p err² (the GPTQ objective: the increase of the layer's output error
// ‖XWᵀ - XŴᵀ‖² predicted by H, up to the factor 2 of H).
double gptqQuantizeRows(const float* w, int cols, const GptqFactor& factor, const GptqOptions& options,
                        Int4WeightsMut out, int rowBegin, int rowEnd);

struct GptqResult {
  double damp;  // the damping used
  double loss;  // Σ err² over all rows (see gptqQuantizeRows)
};

// prepareGptq, then the sweep with the rows split over the global thread pool.
GptqResult gptqQuantize(const float* w, int rows, int cols, const double* hessian, int hessianSize,
                        const GptqOptions& options, Int4WeightsMut out);

// Column orders from the diagonal of H (cols entries; padding should be given a negative value so that
// it goes last). Both are permutations of 0..cols-1; garOrder keeps every group's columns consecutive.
std::vector<int> garOrder(const double* diag, int cols, int groupSize);
std::vector<int> actOrder(const double* diag, int cols);

}  // namespace w4a8
