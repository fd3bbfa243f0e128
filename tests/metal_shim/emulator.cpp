// The emulator of emulator.hpp and the buffer handling of driver.hpp.
#include "emulator.hpp"

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "driver.hpp"

namespace emu {

namespace {

constexpr size_t kStackBytes = 128 * 1024;

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  ThreadInfo info;
  bool finished = false;
  Wait waiting = Wait::none;
};

struct Group {
  std::vector<Fiber> fibers;
  Body body = nullptr;
  void* context = nullptr;
  std::vector<float> slots;  // one exchange slot per lane, for simd operations
};

Group* g_group = nullptr;
Fiber* g_current = nullptr;
ucontext_t g_scheduler;

void fiber_entry() {
  g_group->body(g_current->info, g_group->context);
  g_current->finished = true;
  swapcontext(&g_current->context, &g_scheduler);
}

void run_group(std::vector<ThreadInfo> infos, bool descending, Body body, void* context) {
  Group group;
  group.body = body;
  group.context = context;
  group.fibers.resize(infos.size());
  group.slots.assign(((infos.size() + kSimdWidth - 1) / kSimdWidth) * kSimdWidth, 0.0f);
  g_group = &group;
  for (size_t i = 0; i < infos.size(); ++i) {
    Fiber& f = group.fibers[i];
    f.info = infos[i];
    f.stack.reset(new char[kStackBytes]);
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  }
  const size_t n = group.fibers.size();
  const size_t simdgroups = (n + kSimdWidth - 1) / kSimdWidth;
  while (true) {
    for (size_t k = 0; k < n; ++k) {
      Fiber& f = group.fibers[descending ? n - 1 - k : k];
      if (f.finished || f.waiting != Wait::none) continue;
      g_current = &f;
      swapcontext(&g_scheduler, &f.context);
      g_current = nullptr;
    }
    size_t finished = 0, at_group = 0;
    for (auto& f : group.fibers) {
      finished += f.finished;
      at_group += f.waiting == Wait::group;
    }
    if (finished == n) break;
    bool released = false;
    if (at_group == n) {
      for (auto& f : group.fibers) f.waiting = Wait::none;
      released = true;
    } else {
      for (size_t s = 0; s < simdgroups; ++s) {
        size_t lo = s * kSimdWidth, hi = std::min(n, lo + kSimdWidth), at_simd = 0;
        for (size_t i = lo; i < hi; ++i) at_simd += group.fibers[i].waiting == Wait::simd;
        if (at_simd == hi - lo) {
          for (size_t i = lo; i < hi; ++i) group.fibers[i].waiting = Wait::none;
          released = true;
        }
      }
    }
    if (!released) {
      if (at_group > 0 && finished > 0) fail("a threadgroup barrier was not reached by every thread");
      fail("deadlock: threads wait at different synchronisation points (divergent barrier or simd op)");
    }
  }
  g_group = nullptr;
}

}  // namespace

void fail(const char* message) {
  std::fprintf(stderr, "emulator error: %s\n", message);
  std::fflush(stderr);
  std::_Exit(3);
}

const ThreadInfo& current() {
  if (!g_current) fail("a GPU built-in was used outside a kernel launch");
  return g_current->info;
}

void wait(Wait kind) {
  current();
  g_current->waiting = kind;
  swapcontext(&g_current->context, &g_scheduler);
}

unsigned simd_lanes() {
  const ThreadInfo& me = current();
  return std::min<unsigned>(kSimdWidth, static_cast<unsigned>(g_group->fibers.size()) - me.simdgroup * kSimdWidth);
}

float simd(SimdOp op, float value, unsigned argument) {
  const ThreadInfo& me = current();
  float* lanes = &g_group->slots[me.simdgroup * kSimdWidth];
  const unsigned count = simd_lanes();
  lanes[me.lane] = value;
  wait(Wait::simd);
  float result = lanes[me.lane];
  switch (op) {
    case SimdOp::sum:
      result = 0.0f;
      for (unsigned i = 0; i < count; ++i) result += lanes[i];
      break;
    case SimdOp::max:
      for (unsigned i = 0; i < count; ++i) result = std::fmax(result, lanes[i]);
      break;
    case SimdOp::min:
      for (unsigned i = 0; i < count; ++i) result = std::fmin(result, lanes[i]);
      break;
    case SimdOp::shuffle_xor:
      if ((me.lane ^ argument) < count) result = lanes[me.lane ^ argument];
      break;
    case SimdOp::shuffle_down:
      if (me.lane + argument < count) result = lanes[me.lane + argument];
      break;
  }
  wait(Wait::simd);  // no lane overwrites its slot before every lane has read
  return result;
}

void launch(Dim3 grid, Dim3 group, bool partial_edge_groups, bool descending, Body body, void* context) {
  group.x = std::min(group.x, grid.x);
  group.y = std::min(group.y, grid.y);
  group.z = std::min(group.z, grid.z);
  const Dim3 groups{(grid.x + group.x - 1) / group.x, (grid.y + group.y - 1) / group.y,
                    (grid.z + group.z - 1) / group.z};
  for (unsigned gz = 0; gz < groups.z; ++gz)
    for (unsigned gy = 0; gy < groups.y; ++gy)
      for (unsigned gx = 0; gx < groups.x; ++gx) {
        Dim3 size = group;
        if (partial_edge_groups) {
          size.x = std::min(group.x, grid.x - gx * group.x);
          size.y = std::min(group.y, grid.y - gy * group.y);
          size.z = std::min(group.z, grid.z - gz * group.z);
        }
        std::vector<ThreadInfo> infos;
        for (unsigned z = 0; z < size.z; ++z)
          for (unsigned y = 0; y < size.y; ++y)
            for (unsigned x = 0; x < size.x; ++x) {
              ThreadInfo t;
              t.grid_size = grid;
              t.group_size = size;
              t.group_position = {gx, gy, gz};
              t.groups_per_grid = groups;
              t.position_in_group = {x, y, z};
              t.position_in_grid = {gx * group.x + x, gy * group.y + y, gz * group.z + z};
              t.index_in_group = x + size.x * (y + size.y * z);
              t.lane = t.index_in_group % kSimdWidth;
              t.simdgroup = t.index_in_group / kSimdWidth;
              t.simdgroups_per_group = (size.x * size.y * size.z + kSimdWidth - 1) / kSimdWidth;
              infos.push_back(t);
            }
        run_group(std::move(infos), descending, body, context);
      }
}

// ---------------------------------------------------------------- driver buffers

namespace {

constexpr size_t kGuardBytes = 256;

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("cannot read a buffer file");
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

}  // namespace

Run::Run(int argc, char** argv, int input_count, int output_count) {
  if (argc != 9) fail("usage: driver ORDER GX GY GZ TX TY TZ DIR");
  descending = std::atoi(argv[1]) != 0;
  grid = {unsigned(std::atoi(argv[2])), unsigned(std::atoi(argv[3])), unsigned(std::atoi(argv[4]))};
  group = {unsigned(std::atoi(argv[5])), unsigned(std::atoi(argv[6])), unsigned(std::atoi(argv[7]))};
  directory = argv[8];
  auto load = [&](const std::string& name) {
    std::vector<unsigned char> content = read_file(directory + "/" + name);
    Buffer buffer;
    buffer.size = content.size();
    buffer.bytes = new unsigned char[buffer.size + 2 * kGuardBytes];
    std::fill(buffer.bytes, buffer.bytes + buffer.size + 2 * kGuardBytes, 0xff);
    std::copy(content.begin(), content.end(), buffer.bytes + kGuardBytes);
    return buffer;
  };
  for (int k = 0; k < input_count; ++k) inputs[k] = load("in" + std::to_string(k) + ".bin");
  for (int k = 0; k < output_count; ++k) outputs[k] = load("out" + std::to_string(k) + ".bin");
  output_total = output_count;
}

unsigned char* Buffer::data() { return bytes + kGuardBytes; }

void Run::finish() {
  for (int k = 0; k < output_total; ++k) {
    Buffer& b = outputs[k];
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (b.bytes[i] != 0xff || b.bytes[kGuardBytes + b.size + i] != 0xff) {
        std::fprintf(stderr, "emulator error: output %d was written out of bounds\n", k);
        std::exit(4);
      }
    }
    std::ofstream file(directory + "/out" + std::to_string(k) + ".bin", std::ios::binary);
    file.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size));
  }
}

}  // namespace emu
