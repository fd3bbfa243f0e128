// A deterministic CPU emulator of GPU threadgroups, used to execute Metal and
// CUDA kernel source in tests (see metal_stdlib.h and cuda_emulation.h).
//
// The threads of one threadgroup (block) run as fibers on one OS thread. A
// fiber runs until it reaches a synchronisation point (a threadgroup barrier
// or a simdgroup exchange) and then yields; a barrier opens only when every
// thread of its scope has arrived. Between synchronisation points the threads
// run one after another in a fixed order (ascending or descending), so a
// missing barrier reliably exposes stale shared memory in one of the two
// orders. Barriers that not every thread reaches are reported as errors.
// Threadgroups run one at a time, so function-scope `static` storage behaves
// as threadgroup (shared) memory.
#pragma once

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

namespace emu {

constexpr unsigned kSimdWidth = 32;
constexpr size_t kStackBytes = 128 * 1024;

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

enum class Wait { none, group, simd };

// What a thread knows about where it runs, in Metal's and CUDA's terms.
struct ThreadInfo {
  Dim3 grid_size;            // threads in the grid
  Dim3 group_size;           // threads in this threadgroup
  Dim3 group_position;       // threadgroup index in the grid
  Dim3 groups_per_grid;
  Dim3 position_in_group;
  Dim3 position_in_grid;
  unsigned index_in_group = 0;
  unsigned lane = 0;
  unsigned simdgroup = 0;
  unsigned simdgroups_per_group = 0;
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  ThreadInfo info;
  bool finished = false;
  Wait waiting = Wait::none;
};

[[noreturn]] inline void fail(const char* message) {
  std::fprintf(stderr, "emulator error: %s\n", message);
  std::fflush(stderr);
  std::_Exit(3);
}

struct Group {
  std::vector<Fiber> fibers;
  std::function<void(const ThreadInfo&)> body;
  // One exchange slot per lane and simdgroup, for simd reductions and shuffles.
  std::vector<double> slots;
};

inline Group* g_group = nullptr;
inline Fiber* g_current = nullptr;
inline ucontext_t g_scheduler;

inline const ThreadInfo& current() {
  if (!g_current) fail("a GPU builtin was used outside a kernel launch");
  return g_current->info;
}

inline void wait(Wait kind) {
  g_current->waiting = kind;
  swapcontext(&g_current->context, &g_scheduler);
}

inline void fiber_entry() {
  g_group->body(g_current->info);
  g_current->finished = true;
  swapcontext(&g_current->context, &g_scheduler);
}

// All lanes of the calling thread's simdgroup exchange one value each.
template <typename Combine>
double simd_exchange(double value, Combine combine) {
  const ThreadInfo& me = current();
  double* slots = &g_group->slots[me.simdgroup * kSimdWidth];
  slots[me.lane] = value;
  wait(Wait::simd);
  unsigned first = me.simdgroup * kSimdWidth;
  unsigned count = 0;
  for (unsigned i = first; i < first + kSimdWidth && i < g_group->fibers.size(); ++i) count++;
  double result = combine(slots, count, me.lane);
  wait(Wait::simd);  // nobody overwrites a slot before every lane has read
  return result;
}

// Run one threadgroup: every thread executes `body` with its ThreadInfo.
inline void run_group(std::vector<ThreadInfo> infos, bool descending,
                      const std::function<void(const ThreadInfo&)>& body) {
  Group group;
  group.body = body;
  group.fibers.resize(infos.size());
  group.slots.assign(((infos.size() + kSimdWidth - 1) / kSimdWidth) * kSimdWidth, 0.0);
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

// Metal's dispatch_threads: `grid` counts threads; edge threadgroups may be partial.
// CUDA (as MLX launches it): ceil(grid / group) full blocks of `group` threads.
inline void launch(Dim3 grid, Dim3 group, bool partial_edge_groups, bool descending,
                   const std::function<void(const ThreadInfo&)>& body) {
  group.x = std::min(group.x, grid.x);
  group.y = std::min(group.y, grid.y);
  group.z = std::min(group.z, grid.z);
  Dim3 groups{(grid.x + group.x - 1) / group.x, (grid.y + group.y - 1) / group.y,
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
        run_group(std::move(infos), descending, body);
      }
}

}  // namespace emu
