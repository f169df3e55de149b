#pragma once
// Checkpoints: one directory holding
//   meta.json              JSON metadata: format, foldfarm version and the build that wrote
//                          it ("build": core/build_info/build_info.hpp), PET config, feature
//                          statistics, class names, training state, free-form extras, the
//                          name and SHA-256 of the tensor payload, and a SHA-256 of the
//                          metadata itself;
//   tensors-<sha16>.pt     named tensors (torch::pickle_save of a Dict[str, Tensor]; readable
//                          with torch.load in Python).
// Writing is atomic: the payload is written under a new name (temp + fsync + rename), then
// meta.json is replaced atomically (the commit point), then stale payloads are removed. A
// reader sees either the old checkpoint or the new one, never a mix.
//
// Tensor names: "model.<param>" (parameters and buffers), optionally "ema.<param>",
// "best.<param>", "opt.<group>.<index>.<field>", "rng.<name>".
//
// Errors: a missing directory, unreadable/corrupt metadata, checksum mismatch -> InputError
// naming the file and what to do. Thread-safety: none; rank 0 alone writes.
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/features.hpp"
#include "core/model/pet.hpp"

namespace foldfarm {

struct CheckpointMeta {
  PetConfig config;
  data::FeatureStats stats = data::FeatureStats::jetClass();
  std::vector<std::string> class_names;
  nlohmann::json training;  // trainer state (null when none)
  nlohmann::json extra;     // e.g. conditioning statistics for generation (null when none)
};

struct Checkpoint {
  std::string dir;
  CheckpointMeta meta;
  nlohmann::json build;  // meta.json's "build": the build that wrote it (null when none)
  std::map<std::string, torch::Tensor> tensors;
};

// True when `dir`/meta.json exists.
bool checkpointExists(const std::string& dir);
// What another command wrote into `dir` or a directory above it, for a refusal ("holds an
// OmniFold chain (`foldfarm unfold --out`)", "is inside a campaign (…) at D", an aggregation);
// "" when none of those.
std::string otherCommandsOutput(const std::string& dir);
// Creates `dir` if needed. Throws Error on I/O failure (the previous checkpoint stays).
void writeCheckpoint(const std::string& dir, const CheckpointMeta& meta,
                     const std::map<std::string, torch::Tensor>& tensors);
// Verifies both checksums. Throws InputError on any problem.
Checkpoint readCheckpoint(const std::string& dir);
// Whether `dir` holds an intact checkpoint of exactly these tensors (names, types, shapes and
// bits): a training resumed after it had finished ends with the model it wrote, which is then
// kept as it was rather than written again.
bool checkpointHoldsTensors(const std::string& dir,
                            const std::map<std::string, torch::Tensor>& tensors);
// The checkpoint directory a user gave, in either form every command takes: a checkpoint
// directory itself (holding meta.json) or the output directory of `foldfarm pretrain` /
// `finetune` (holding model/meta.json). Throws InputError naming `dir` otherwise, and for a
// training's state/ (its meta names the optimiser's state): no trained model.
std::string resolveCheckpointDir(const std::string& dir);
// What tells a checkpoint from any other, wherever it lies: the SHA-256 of its description
// (which holds its payload's). Throws InputError naming `dir` when meta.json cannot be read
// or has none (readCheckpoint says more).
std::string checkpointIdentity(const std::string& dir);

// Model tensors under `prefix` ("model.", "ema.", ...).
void addModelTensors(Pet& model, const std::string& prefix,
                     std::map<std::string, torch::Tensor>& out);
// Loads parameters/buffers of `prefix` into `model`. strict: every model tensor must be
// present with the same shape (InputError naming `source` otherwise).
void loadModelTensors(Pet& model, const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& prefix, const std::string& source);

// Warm start: copies every "model." tensor whose name and shape match (as OmniLearn's
// load_weights(by_name=True, skip_mismatch=True) does).
struct WarmStartReport {
  std::vector<std::string> loaded;
  std::vector<std::string> skipped;  // "<name> (checkpoint [..] vs model [..])" or "(missing)"
  std::string summary() const;
};
WarmStartReport warmStart(Pet& model, const Checkpoint& ckpt);

// Throws InputError("<dir>: checkpoint was written for a different model (...): ...") when
// `expected` differs from the checkpoint's config.
void requireSameConfig(const Checkpoint& ckpt, const PetConfig& expected,
                       const std::string& what_to_do);

// Builds the model stored in a checkpoint (its config, "model." or "ema." tensors).
Pet loadPet(const Checkpoint& ckpt, bool prefer_ema = false);

}  // namespace foldfarm
