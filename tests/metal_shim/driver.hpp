// The buffers of the small programs the test harness generates around one
// kernel (implemented in emulator.cpp).
//
// Usage: driver KERNEL ORDER GX GY GZ TX TY TZ DIR, where KERNEL picks one of
// the program's kernels, ORDER is 0 (threads run in
// ascending order between synchronisation points) or 1 (descending), and DIR
// holds in<k>.bin (input k) and out<k>.bin (the initial bytes of output k,
// replaced by its final bytes). Every buffer sits between guard bytes of 0xff
// (a NaN for every float type): reading past an array gives NaN, and writing
// past one is reported (exit code 4).
#pragma once

#include <cstddef>
#include <string>

#include "emulator.hpp"

namespace emu {

struct Buffer {
  unsigned char* bytes = nullptr;
  size_t size = 0;
  unsigned char* data();
};

struct Run {
  bool descending = false;
  Dim3 grid, group;
  std::string directory;
  Buffer inputs[64], outputs[64];
  int output_total = 0;

  Run(int argc, char** argv, int input_count, int output_count);
  void finish();  // check the guard bytes of the outputs and save them
};

}  // namespace emu
