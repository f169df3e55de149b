#pragma once
// runThreads: fn(0) ... fn(n-1), each on its own thread; returns when every one has finished.
// The first exception any of them threw (by index) is rethrown here, on the calling thread.
// A bare std::thread whose function throws ends the process through std::terminate ("what():
// std::bad_alloc", exit 134), and one left joinable when the vector that holds it unwinds
// does the same: here a failure to start thread k joins threads 0..k-1 and then rethrows.
//
//   std::vector<Part> parts(n);
//   runThreads(n, [&](int t) { parts[t] = generate(t); });
#include <exception>
#include <thread>
#include <vector>

namespace foldfarm {

// The most threads any --threads option asks for (a node's cores, with room to spare). Beyond
// it, thread pools ask for their per-thread state at once (2^31 - 1 threads: libgomp aborted
// allocating 481 GB).
inline constexpr int kMaxThreads = 4096;

template <class Fn>
void runThreads(int n, Fn&& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n > 0 ? n : 0));
  std::vector<std::thread> threads;
  threads.reserve(errors.size());
  auto joinAll = [&] {
    for (auto& th : threads) th.join();
  };
  try {
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([&fn, &errors, t] {
        try {
          fn(t);
        } catch (...) {
          errors[static_cast<size_t>(t)] = std::current_exception();
        }
      });
    }
  } catch (...) {
    joinAll();
    throw;
  }
  joinAll();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace foldfarm
