#pragma once
// Slot packing: which GPU and how many threads each task slot of a node gets. Slot s of a
// GPU campaign uses GPU s / tasks_per_gpu; when this process already sees a restricted
// CUDA_VISIBLE_DEVICES (a Slurm allocation), that list is indexed, so slots never escape
// the allocation. Every slot's environment is set explicitly (never inherited by chance):
// CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID, OMP/OpenBLAS/MKL thread counts,
// FOLDFARM_SLOT and FOLDFARM_THREADS; with tasks_per_gpu > 1 also
// FOLDFARM_GPU_MEMORY_FRACTION (0.95 / tasks_per_gpu: each task's share of its GPU's memory).
#include <string>
#include <utility>
#include <vector>

#include "jobs/campaign_spec.hpp"

namespace foldfarm::jobs {

struct SlotBinding {
  int slot = 0;
  int gpu = -1;  // device id as CUDA sees it after CUDA_DEVICE_ORDER=PCI_BUS_ID; -1: CPU
  std::vector<std::pair<std::string, std::string>> env;
};

// Bindings for `count` slots of this node, numbered from `first_slot` (an MPI rank's
// local slots start at its local index). Throws InputError when a slot would need a GPU
// the visible list lacks.
std::vector<SlotBinding> slotBindings(const CampaignResources& r, int count, int first_slot = 0);

// FOLDFARM_GPU_MEMORY_FRACTION's value for each of `sharing` (> 1) tasks on one GPU: an equal
// share of 0.95 of its memory (core/train/device.hpp applies it). The local pool's and the
// pilot's slots, and the lanes of a Slurm array element, take it.
std::string gpuMemoryFraction(int sharing);

}  // namespace foldfarm::jobs
