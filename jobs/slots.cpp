#include "jobs/slots.hpp"

#include <cstdlib>

#include "core/base/error.hpp"

namespace foldfarm::jobs {

std::vector<SlotBinding> slotBindings(const CampaignResources& r, int count, int first_slot) {
  std::vector<std::string> visible;
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string s = cvd;
    size_t start = 0;
    while (!s.empty() && start <= s.size()) {
      size_t end = s.find(',', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) visible.push_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  std::vector<SlotBinding> out;
  std::string threads = std::to_string(r.threads_per_task);
  for (int k = 0; k < count; ++k) {
    SlotBinding b;
    b.slot = first_slot + k;
    if (r.gpus > 0) {
      int g = b.slot / r.tasks_per_gpu;
      if (g >= r.gpus) {
        throw InputError("slot " + std::to_string(b.slot) + " needs GPU " + std::to_string(g) +
                         " but resources.gpus = " + std::to_string(r.gpus));
      }
      b.gpu = g;
      std::string dev = std::to_string(g);
      if (!visible.empty()) {
        if (g >= static_cast<int>(visible.size())) {
          throw InputError("slot " + std::to_string(b.slot) + " needs GPU " + std::to_string(g) +
                           " but CUDA_VISIBLE_DEVICES lists " + std::to_string(visible.size()) +
                           "; lower resources.gpus");
        }
        dev = visible[g];
      }
      b.env.emplace_back("CUDA_VISIBLE_DEVICES", dev);
      // Tasks sharing a GPU each cap their allocator at an equal share of its memory
      // (core/train/device.hpp applies it), so that one task cannot starve the others.
      if (r.tasks_per_gpu > 1)
        b.env.emplace_back("FOLDFARM_GPU_MEMORY_FRACTION", gpuMemoryFraction(r.tasks_per_gpu));
    } else {
      b.env.emplace_back("CUDA_VISIBLE_DEVICES", "");
    }
    b.env.emplace_back("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    b.env.emplace_back("OMP_NUM_THREADS", threads);
    b.env.emplace_back("OPENBLAS_NUM_THREADS", threads);
    b.env.emplace_back("MKL_NUM_THREADS", threads);
    b.env.emplace_back("FOLDFARM_THREADS", threads);
    b.env.emplace_back("FOLDFARM_SLOT", std::to_string(b.slot));
    out.push_back(std::move(b));
  }
  return out;
}

std::string gpuMemoryFraction(int sharing) {
  return std::to_string(0.95 / static_cast<double>(sharing));
}

}  // namespace foldfarm::jobs
