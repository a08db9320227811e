// A small persistent pool for the CPU kernels.  MLX's CPU encoder runs one task at
// a time per stream, so a kernel that wants every core splits its own work here.
#pragma once

#include <functional>

namespace marlin::cpu {

// Runs body(task) for task in [0, num_tasks) on all pool threads plus the caller,
// returning when every task is done.  Tasks are handed out dynamically, so uneven
// tasks balance.  Nested calls (from inside a task) run serially on the caller.
void parallel_for(int num_tasks, const std::function<void(int task)>& body);

// Number of threads parallel_for uses (pool threads + caller).
int num_threads();

} // namespace marlin::cpu
