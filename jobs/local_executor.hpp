#pragma once
// LocalWorkerPool: the Transport of the local executor, a pool of persistent worker
// processes on this node, one per slot (slots.hpp sets each one's GPU and threads). A
// worker that dies is reported (SlotEvent::kLost with "signal N") and replaced by a fresh
// one, up to RunOptions::max_worker_restarts per slot. Also used by each MPI pilot rank
// for its own slot.
#include <memory>
#include <string>
#include <vector>

#include "jobs/child_process.hpp"
#include "jobs/dispatcher.hpp"
#include "jobs/slots.hpp"
#include "jobs/worker_protocol.hpp"

namespace foldfarm::jobs {

class LocalWorkerPool : public Transport {
 public:
  LocalWorkerPool(std::vector<std::string> worker_argv, std::vector<SlotBinding> bindings,
                  int max_restarts);
  ~LocalWorkerPool() override;

  int slots() const override { return static_cast<int>(workers_.size()); }
  bool usable(int slot) const override { return workers_[slot].usable; }
  std::string host(int slot) const override { return host_; }
  void send(int slot, const std::vector<Assignment>& batch) override;
  void wait(double timeout_s, std::vector<SlotEvent>& events) override;
  void requestStop() override;
  void forceStop() override;
  void shutdown() override;
  // Sends raw frame bytes (already framed) to a slot's worker (MPI relay).
  void sendRaw(int slot, const std::string& frames);
  pid_t workerPid(int slot) const { return workers_[slot].process.pid(); }

 private:
  struct Worker {
    ChildProcess process;
    FrameReader reader;
    int restarts = 0;
    bool usable = true;
  };
  void start(int slot);
  void readAvailable(int slot, std::vector<SlotEvent>& events);

  std::vector<std::string> argv_;
  std::vector<SlotBinding> bindings_;
  int max_restarts_;
  std::string host_;
  std::vector<Worker> workers_;
  bool stopping_ = false;
};

}  // namespace foldfarm::jobs
