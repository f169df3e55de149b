#pragma once
// Sizes and switches of a PET model. Torch-free: read by commands, checkpoints
// and the campaign layer without LibTorch.
//
// Presets: "omnilearn" (the paper's model, D = 128) and "tiny" (tests, CPU demos).
// A JSON object overrides any field by name; unknown keys are refused (InputError).
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace foldfarm {

struct PetConfig {
  std::string preset = "omnilearn";
  int num_features = 13;  // particle features (core/data/features.hpp)
  int num_jet = 4;        // jet features [pT, eta, mass, multiplicity]
  int dim = 128;          // width D
  int heads = 4;
  int blocks = 8;        // body transformer blocks
  int class_layers = 2;  // class-attention layers of the classifier head
  int gen_layers = 2;    // transformer blocks of the generator head
  int k = 10;            // kNN neighbours of the local blocks
  int local_blocks = 2;
  double layer_scale_init = 1e-5;
  // Probability, per jet, of zeroing the features >= feature_dropout_from.
  double feature_dropout = 0.1;
  int feature_dropout_from = 7;
  int fourier_freqs = 32;  // time embedding: [sin, cos] of this many frequencies
  double norm_eps = 1e-3;  // masked GroupNorm epsilon
  int num_classes = 1;     // classifier outputs: 1 = one logit (BCE), C > 1 = softmax (CE)
  bool generator = false;  // build the diffusion generator head

  bool operator==(const PetConfig& o) const;
  bool operator!=(const PetConfig& o) const { return !(*this == o); }
};

// Throws InputError naming the preset and the valid names.
PetConfig petPreset(const std::string& name);
// Applies the keys of `overrides` to `base`: a "preset" first (its sizes replace `base`'s;
// omnilearn or tiny), then the other keys over them. Throws InputError (naming `source`, e.g.
// the config file) for unknown keys or presets, wrong types or invalid sizes.
PetConfig applyPetOverrides(PetConfig base, const nlohmann::json& overrides,
                            const std::string& source);
// The most parameters a model may have (PET: an upper estimate from its sizes; the
// observable MLP): 2^31, about 8.6 GB of fp32 weights before gradients and optimiser state.
inline constexpr double kMaxModelParameters = 2147483648.0;
// Throws InputError(source + ": ...") if sizes are inconsistent (dim % heads != 0 ...) or
// larger than kMaxModelParameters allows.
void validatePetConfig(const PetConfig& cfg, const std::string& source);

nlohmann::json petConfigToJson(const PetConfig& cfg);
// Full JSON (as written by petConfigToJson) back to a config; missing keys keep the preset's.
PetConfig petConfigFromJson(const nlohmann::json& j, const std::string& source);

}  // namespace foldfarm
