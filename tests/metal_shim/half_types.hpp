// Storage stand-ins for 16-bit floats: IEEE half (via _Float16) and bfloat16
// (round to nearest even). Conversions are explicit on purpose: the kernels
// must read with static_cast<float>(...) and write with static_cast<T>(...),
// and must never do arithmetic in 16 bits, so any implicit use fails to compile.
#pragma once

#include <cstdint>
#include <cstring>

namespace emu {

struct Half {
  uint16_t bits = 0;
  Half() = default;
  explicit Half(float value) {
    _Float16 h = static_cast<_Float16>(value);
    std::memcpy(&bits, &h, 2);
  }
  explicit operator float() const {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
  }
};

struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  explicit BFloat16(float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    } else {
      bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
  explicit operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &u, 4);
    return value;
  }
};

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);

}  // namespace emu
