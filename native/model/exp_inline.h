// expInline: e^x in FP32 without a library call, so that loops calling it vectorize (softmax, SwiGLU).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace w4a8 {

// e^x = 2^n * e^f with n = round(x / ln 2), f = x - n ln 2 (two-part ln 2, Cody-Waite), |f| <= ln 2 / 2, and e^f
// by its degree-6 Taylor polynomial (error < 2e-8 relative on that interval). Branch-free, so the loops that call
// it vectorize; 2^n is built in two halves so that n down to -150 gives subnormals / zero and n up to 128 inf.
inline float expInline(float x) {
  x = std::min(std::max(x, -104.0f), 89.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer, ties to even
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float f = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int ni = (int)n;
  const int n1 = ni / 2, n2 = ni - n1;  // 2^n = 2^n1 * 2^n2, each factor a normal float for n in [-150, 128]
  uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return p * s1 * s2;
}

}  // namespace w4a8
