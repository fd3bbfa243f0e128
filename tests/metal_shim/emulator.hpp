// A deterministic CPU emulator of GPU threadgroups, used to execute Metal and
// CUDA kernel source in tests (see metal_stdlib.h and cuda_emulation.h; the
// implementation is emulator.cpp, compiled once per test session).
//
// The threads of one threadgroup (block) run as fibers on one OS thread. A
// fiber runs until it reaches a synchronisation point (a threadgroup barrier
// or a simdgroup exchange) and then yields; a barrier opens only when every
// thread of its scope has arrived. Between synchronisation points the threads
// run one after another in a fixed order (ascending or descending), so a
// missing barrier exposes stale shared memory in one of the two orders.
// Barriers that not every thread reaches are reported as errors. Threadgroups
// run one at a time, so function-scope `static` storage behaves as threadgroup
// (shared) memory.
#pragma once

namespace emu {

constexpr unsigned kSimdWidth = 32;

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// Where a thread runs, in Metal's and CUDA's terms.
struct ThreadInfo {
  Dim3 grid_size;         // threads in the grid
  Dim3 group_size;        // threads in this threadgroup
  Dim3 group_position;    // threadgroup index in the grid
  Dim3 groups_per_grid;
  Dim3 position_in_group;
  Dim3 position_in_grid;
  unsigned index_in_group = 0;
  unsigned lane = 0;
  unsigned simdgroup = 0;
  unsigned simdgroups_per_group = 0;
};

enum class Wait { none, group, simd };

[[noreturn]] void fail(const char* message);

// The running thread.
const ThreadInfo& current();

// Block the running thread at a threadgroup barrier or a simdgroup synchronisation.
void wait(Wait kind);

enum class SimdOp { sum, max, min, shuffle_xor, shuffle_down };

// Every lane of the running thread's simdgroup contributes `value`; each gets
// the sum, maximum, ..., or the value of lane `lane ^ argument` / `lane + argument`.
float simd(SimdOp op, float value, unsigned argument = 0);

// Lanes present in the running thread's simdgroup.
unsigned simd_lanes();

using Body = void (*)(const ThreadInfo&, void*);

// Run every thread of the grid. Metal dispatches exactly `grid` threads (edge
// threadgroups may be partial); CUDA, as MLX launches it, ceil(grid / group)
// whole blocks.
void launch(Dim3 grid, Dim3 group, bool partial_edge_groups, bool descending, Body body, void* context);

template <typename F>
void launch(Dim3 grid, Dim3 group, bool partial_edge_groups, bool descending, F&& body) {
  launch(grid, group, partial_edge_groups, descending,
         [](const ThreadInfo& t, void* f) { (*static_cast<F*>(f))(t); }, &body);
}

}  // namespace emu
