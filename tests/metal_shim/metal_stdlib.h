// A stand-in for <metal_stdlib> (and the parts of MLX's Metal prelude that
// custom kernels see), so that the exact source MLX generates for a
// `mx.fast.metal_kernel` compiles as C++20 and runs on the CPU emulator.
//
// - Address spaces: `device`, `constant` and `thread` are plain memory;
//   `threadgroup` declarations become function-scope statics, which are shared
//   by the threads of a threadgroup because the emulator runs one threadgroup
//   at a time (so `threadgroup` may only qualify declarations, not pointers).
// - `[[kernel]]`, `[[buffer(i)]]` and the thread attributes are attributes
//   g++ ignores (compile with -Wno-attributes).
// - Only float overloads of the math functions exist, and 16-bit types have
//   explicit conversions only: mixing in doubles (-Werror=double-promotion,
//   -Werror=float-conversion) or computing in 16 bits is a compile error.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "emulator.hpp"
#include "half_types.hpp"

#define device
#define constant
#define thread
#define threadgroup static
#define kernel

typedef unsigned int uint;
typedef unsigned short ushort;
typedef emu::Half half;
typedef emu::Half float16_t;
typedef emu::BFloat16 bfloat;
typedef emu::BFloat16 bfloat16_t;

struct uint3 {
  uint x, y, z;
};

inline uint3 to_uint3(emu::Dim3 d) { return {d.x, d.y, d.z}; }

namespace metal {

template <typename T>
struct numeric_limits : std::numeric_limits<T> {};

#define LOSSCC_UNARY(name, impl) \
  inline float name(float x) { return impl(x); }
LOSSCC_UNARY(exp, std::exp)
LOSSCC_UNARY(exp2, std::exp2)
LOSSCC_UNARY(log, std::log)
LOSSCC_UNARY(log2, std::log2)
LOSSCC_UNARY(abs, std::fabs)
LOSSCC_UNARY(fabs, std::fabs)
LOSSCC_UNARY(sqrt, std::sqrt)
LOSSCC_UNARY(tanh, std::tanh)
LOSSCC_UNARY(cosh, std::cosh)
LOSSCC_UNARY(sinh, std::sinh)
LOSSCC_UNARY(sin, std::sin)
LOSSCC_UNARY(cos, std::cos)
LOSSCC_UNARY(tan, std::tan)
LOSSCC_UNARY(atan, std::atan)
LOSSCC_UNARY(floor, std::floor)
LOSSCC_UNARY(ceil, std::ceil)
#undef LOSSCC_UNARY

inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline float sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x == x ? x : 0.0f)); }
inline float pow(float x, float y) { return std::pow(x, y); }
inline float powr(float x, float y) { return std::pow(x, y); }
inline float copysign(float x, float y) { return std::copysign(x, y); }
inline float fmod(float x, float y) { return std::fmod(x, y); }
inline float fmax(float x, float y) { return std::fmax(x, y); }
inline float fmin(float x, float y) { return std::fmin(x, y); }
inline float max(float x, float y) { return std::fmax(x, y); }
inline float min(float x, float y) { return std::fmin(x, y); }
inline int max(int x, int y) { return x > y ? x : y; }
inline int min(int x, int y) { return x < y ? x : y; }
inline uint max(uint x, uint y) { return x > y ? x : y; }
inline uint min(uint x, uint y) { return x < y ? x : y; }
inline bool isnan(float x) { return std::isnan(x); }
inline bool isinf(float x) { return std::isinf(x); }
inline bool isfinite(float x) { return std::isfinite(x); }

enum class mem_flags { mem_none, mem_device, mem_threadgroup, mem_texture };

inline void threadgroup_barrier(mem_flags) { emu::wait(emu::Wait::group); }
inline void simdgroup_barrier(mem_flags) { emu::wait(emu::Wait::simd); }

inline float simd_sum(float value) { return emu::simd(emu::SimdOp::sum, value); }
inline float simd_max(float value) { return emu::simd(emu::SimdOp::max, value); }
inline float simd_min(float value) { return emu::simd(emu::SimdOp::min, value); }
inline float simd_shuffle_xor(float value, ushort mask) { return emu::simd(emu::SimdOp::shuffle_xor, value, mask); }
inline float simd_shuffle_down(float value, ushort delta) { return emu::simd(emu::SimdOp::shuffle_down, value, delta); }

}  // namespace metal

using namespace metal;
