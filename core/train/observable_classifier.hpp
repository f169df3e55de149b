#pragma once
// A one-logit MLP on jet-level observables: classic OmniFold's classifier, and the base
// model that a boosted "pet+mlp" chain step trains PET on top of (ensembles/chain.hpp).
//
//   ObservableClassifier mlp({"mass", "tau21"}, {64, 64}, /*init_seed=*/7);
//   MlpFitOptions o; o.seed = 11;                        // data order and validation split
//   FitResult fit = mlp.fit(x, labels, weights, o);      // x: n rows of columns().size()
//   std::vector<float> logit = mlp.logits(x_eval);       // sigmoid(logit) = P(label 1 | x)
//   mlp.save("task/state/mlp_step1");                    // checkpoint directory (atomic)
//
// Inputs are raw values, row-major (n x k); fit() standardises each column with the mean and
// standard deviation of its training rows the first time it runs (a loaded or already fitted
// model keeps its statistics). Non-finite inputs are refused (InputError naming the column).
// Network: k -> hidden... (GELU) -> 1; weighted BCE, mean over the batch of w_i * loss_i
// (as the PET classifier); AdamW; early stopping on a val_fraction split drawn by
// splitRows(n, val_fraction, seed) -- the same rows that a PetClassifier fitted with the same
// seed and fraction validates on -- with the best epoch's weights restored.
// Deterministic in (init seed, options, data) for a fixed number of intra-op threads.
//
// Device: the network, the standardised inputs, labels and weights live on `device` (a chain
// task's GPU, chain.hpp); an epoch's row order is drawn on the host and copied once, batches
// are cut on the device, and the losses are read once per epoch, not per step. The initial
// weights are drawn on the host, so every device starts from the same network; on the CPU
// the results are those of a host-only fit, bit for bit. Checkpoints hold host copies and
// load on either device.
//
// Thread-safety: one instance per thread. Errors: InputError for bad data, options and
// unreadable checkpoints (one line naming the path and what to do).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "core/train/trainer.hpp"

namespace foldfarm {

struct MlpFitOptions {
  int64_t epochs = 60;
  int64_t patience = 8;  // 0 = no early stopping
  int64_t batch_size = 256;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double val_fraction = 0.1;
  uint64_t seed = 0;  // data order and validation split
  std::string label = "mlp";
};

// Throws InputError "<who>: ..." unless `hidden` has a layer, every width is >= 1 and the
// MLP on `inputs` columns has at most kMaxModelParameters (core/model/pet_config.hpp).
void validateMlpShape(const std::vector<int64_t>& hidden, int64_t inputs, const std::string& who);

class ObservableClassifier {
 public:
  // columns: names of the input columns (recorded in checkpoints, checked on load);
  // hidden: widths of the hidden layers (at least one).
  ObservableClassifier(std::vector<std::string> columns, std::vector<int64_t> hidden,
                       uint64_t init_seed, torch::Device device = torch::kCPU);
  ~ObservableClassifier();
  ObservableClassifier(ObservableClassifier&&) noexcept;
  ObservableClassifier& operator=(ObservableClassifier&&) noexcept;

  // Loads a checkpoint written by save(); InputError when it is not an observable MLP or
  // its columns differ from `expect_columns` (when non-empty). The network goes to `device`.
  static ObservableClassifier load(const std::string& dir,
                                   const std::vector<std::string>& expect_columns = {},
                                   torch::Device device = torch::kCPU);

  FitResult fit(const std::vector<float>& x, const std::vector<int64_t>& labels,
                const std::vector<float>& weights, const MlpFitOptions& options);
  // Logit per row (eval mode), computed on the classifier's device, returned to the host.
  std::vector<float> logits(const std::vector<float>& x) const;

  void save(const std::string& dir) const;

  const std::vector<std::string>& columns() const { return columns_; }
  const std::vector<int64_t>& hidden() const { return hidden_; }
  int64_t parameterCount() const;
  torch::Device device() const { return device_; }

 private:
  struct Net;
  // The n rows of x (n x k, host) on the device, standardised with the fitted statistics.
  torch::Tensor standardised(const std::vector<float>& x, int64_t n) const;
  std::vector<std::string> columns_;
  std::vector<int64_t> hidden_;
  torch::Device device_;
  std::vector<float> mean_, std_;  // empty until the first fit (or load)
  std::unique_ptr<Net> net_;
};

}  // namespace foldfarm
