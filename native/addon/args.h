// Argument checks for the N-API layer. lib/ validates first and gives the friendlier message; these
// checks are the second line: they guarantee that native code never reads or writes out of bounds,
// whatever a caller passes. Every failure throws a JS Error with a `code` (same codes as lib/errors.ts).
#pragma once
#include <napi.h>

#include <string>

#include "kernels/kernels.h"

namespace w4a8::addon {

namespace codes {
constexpr const char* kType = "E_TYPE";        // wrong JS type or TypedArray kind
constexpr const char* kLength = "E_LENGTH";    // TypedArray length does not match the shape
constexpr const char* kShape = "E_SHAPE";      // dimension not a positive integer in range
constexpr const char* kGroup = "E_GROUP";      // group size not 32/64/128 or not dividing K
constexpr const char* kFormat = "E_FORMAT";    // unknown FP8 format name
constexpr const char* kScale = "E_SCALE";      // scale not finite and > 0
}  // namespace codes

[[noreturn]] void fail(Napi::Env env, const char* code, const std::string& message);

constexpr int kMaxDimension = 1 << 24;

int dimension(const Napi::Value& value, const char* name);  // integer in [1, kMaxDimension]
Fp8Format fp8Format(const Napi::Value& value, const char* name);
float positiveScale(const Napi::Value& value, const char* name);
bool boolean(const Napi::Value& value, const char* name);

template <typename T> struct TypedArrayKind;
template <> struct TypedArrayKind<float> { static constexpr napi_typedarray_type type = napi_float32_array; static constexpr const char* name = "Float32Array"; };
template <> struct TypedArrayKind<uint8_t> { static constexpr napi_typedarray_type type = napi_uint8_array; static constexpr const char* name = "Uint8Array"; };
template <> struct TypedArrayKind<uint16_t> { static constexpr napi_typedarray_type type = napi_uint16_array; static constexpr const char* name = "Uint16Array"; };

bool isTypedArrayOf(const Napi::Value& value, napi_typedarray_type type);

// The data of a TypedArray of element type T and exactly `length` elements.
template <typename T>
T* typedArray(const Napi::Value& value, const char* name, size_t length) {
  if (!isTypedArrayOf(value, TypedArrayKind<T>::type))
    fail(value.Env(), codes::kType, std::string(name) + " must be a " + TypedArrayKind<T>::name);
  Napi::TypedArrayOf<T> array = value.As<Napi::TypedArrayOf<T>>();
  if (array.ElementLength() != length)
    fail(value.Env(), codes::kLength, std::string(name) + " must have " + std::to_string(length) +
                                          " elements, got " + std::to_string(array.ElementLength()));
  return array.Data();
}

// {rows, cols, groupSize, format, codes, groupScales, zeros, channelScales} (layout in quant/weights.h).
Int4WeightsView int4Weights(const Napi::Value& value, const char* name);
// {rows, cols, format, codes, channelScales}.
Fp8WeightsView fp8Weights(const Napi::Value& value, const char* name);
// A Float32Array (FP32 output) or Uint16Array (BF16 output) of rows * cols elements.
GemmOutput gemmOutput(const Napi::Value& value, const char* name, int rows, int cols);

}  // namespace w4a8::addon
