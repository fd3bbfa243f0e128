// Support for the small programs the test harness generates around one kernel:
// load the input buffers, run the grid on the emulator, save the outputs.
//
// Usage: driver ORDER GX GY GZ TX TY TZ DIR, where ORDER is 0 (threads run in
// ascending order between synchronisation points) or 1 (descending), and DIR
// holds in<k>.bin (input k) and out<k>.bin (the initial bytes of output k,
// replaced by its final bytes). Every buffer sits between guard bytes of 0xff
// (a NaN for every float type): reading past an array gives NaN, and writing
// past one is reported (exit code 4).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "emulator.hpp"

namespace emu {

constexpr size_t kGuardBytes = 256;

struct Buffer {
  std::vector<unsigned char> bytes;
  size_t size = 0;
  unsigned char* data() { return bytes.data() + kGuardBytes; }
};

inline Buffer read_buffer(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("cannot read a buffer file");
  std::vector<unsigned char> content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  Buffer buffer;
  buffer.size = content.size();
  buffer.bytes.assign(buffer.size + 2 * kGuardBytes, 0xff);
  std::copy(content.begin(), content.end(), buffer.bytes.begin() + kGuardBytes);
  return buffer;
}

struct Run {
  bool descending = false;
  Dim3 grid, group;
  std::string dir;
  std::vector<Buffer> inputs, outputs;

  Run(int argc, char** argv, int input_count, int output_count) {
    if (argc != 9) fail("usage: driver ORDER GX GY GZ TX TY TZ DIR");
    descending = std::atoi(argv[1]) != 0;
    grid = {unsigned(std::atoi(argv[2])), unsigned(std::atoi(argv[3])), unsigned(std::atoi(argv[4]))};
    group = {unsigned(std::atoi(argv[5])), unsigned(std::atoi(argv[6])), unsigned(std::atoi(argv[7]))};
    dir = argv[8];
    for (int k = 0; k < input_count; ++k) inputs.push_back(read_buffer(dir + "/in" + std::to_string(k) + ".bin"));
    for (int k = 0; k < output_count; ++k) outputs.push_back(read_buffer(dir + "/out" + std::to_string(k) + ".bin"));
  }

  void finish() {
    for (size_t k = 0; k < outputs.size(); ++k) {
      Buffer& b = outputs[k];
      for (size_t i = 0; i < kGuardBytes; ++i) {
        if (b.bytes[i] != 0xff || b.bytes[kGuardBytes + b.size + i] != 0xff) {
          std::fprintf(stderr, "emulator error: output %zu was written out of bounds\n", k);
          std::exit(4);
        }
      }
      std::ofstream file(dir + "/out" + std::to_string(k) + ".bin", std::ios::binary);
      file.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size));
    }
  }
};

}  // namespace emu
