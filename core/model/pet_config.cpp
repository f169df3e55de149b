#include "core/model/pet_config.hpp"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/base/error.hpp"
#include "core/base/json_value.hpp"

namespace foldfarm {

bool PetConfig::operator==(const PetConfig& o) const {
  return petConfigToJson(*this) == petConfigToJson(o);
}

PetConfig petPreset(const std::string& name) {
  PetConfig c;
  if (name == "omnilearn") {
    c.preset = name;
    return c;
  }
  if (name == "tiny") {
    c.preset = name;
    c.dim = 32;
    c.heads = 2;
    c.blocks = 2;
    c.class_layers = 1;
    c.gen_layers = 1;
    c.k = 5;
    c.local_blocks = 2;
    return c;
  }
  throw InputError("unknown PET preset '" + name + "': use omnilearn or tiny");
}

nlohmann::json petConfigToJson(const PetConfig& c) {
  return nlohmann::json{{"preset", c.preset},
                        {"num_features", c.num_features},
                        {"num_jet", c.num_jet},
                        {"dim", c.dim},
                        {"heads", c.heads},
                        {"blocks", c.blocks},
                        {"class_layers", c.class_layers},
                        {"gen_layers", c.gen_layers},
                        {"k", c.k},
                        {"local_blocks", c.local_blocks},
                        {"layer_scale_init", c.layer_scale_init},
                        {"feature_dropout", c.feature_dropout},
                        {"feature_dropout_from", c.feature_dropout_from},
                        {"fourier_freqs", c.fourier_freqs},
                        {"norm_eps", c.norm_eps},
                        {"num_classes", c.num_classes},
                        {"generator", c.generator}};
}

namespace {

template <typename T>
void take(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
  out = jsonValue<T>(j.at(key), source + ": PET config key '" + key + "'");
}

}  // namespace

PetConfig applyPetOverrides(PetConfig c, const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw InputError(source + ": PET config must be a JSON object");
  // A preset names sizes, not a label: its sizes first, then the keys beside it over them
  // (before, "preset" set the name only, and a model of one size was labelled as another).
  if (j.contains("preset")) {
    std::string name;
    take(j, "preset", name, source);
    try {
      c = petPreset(name);
    } catch (const InputError& e) {
      throw InputError(source + ": " + e.what());
    }
  }
  for (const auto& [key, value] : j.items()) {
    (void)value;
    if (key == "preset")
      continue;
    else if (key == "num_features")
      take(j, "num_features", c.num_features, source);
    else if (key == "num_jet")
      take(j, "num_jet", c.num_jet, source);
    else if (key == "dim")
      take(j, "dim", c.dim, source);
    else if (key == "heads")
      take(j, "heads", c.heads, source);
    else if (key == "blocks")
      take(j, "blocks", c.blocks, source);
    else if (key == "class_layers")
      take(j, "class_layers", c.class_layers, source);
    else if (key == "gen_layers")
      take(j, "gen_layers", c.gen_layers, source);
    else if (key == "k")
      take(j, "k", c.k, source);
    else if (key == "local_blocks")
      take(j, "local_blocks", c.local_blocks, source);
    else if (key == "layer_scale_init")
      take(j, "layer_scale_init", c.layer_scale_init, source);
    else if (key == "feature_dropout")
      take(j, "feature_dropout", c.feature_dropout, source);
    else if (key == "feature_dropout_from")
      take(j, "feature_dropout_from", c.feature_dropout_from, source);
    else if (key == "fourier_freqs")
      take(j, "fourier_freqs", c.fourier_freqs, source);
    else if (key == "norm_eps")
      take(j, "norm_eps", c.norm_eps, source);
    else if (key == "num_classes")
      take(j, "num_classes", c.num_classes, source);
    else if (key == "generator")
      take(j, "generator", c.generator, source);
    else
      throw InputError(source + ": unknown PET config key '" + key +
                       "' (valid: dim, heads, blocks, class_layers, gen_layers, k, local_blocks, "
                       "layer_scale_init, feature_dropout, feature_dropout_from, fourier_freqs, "
                       "norm_eps, num_classes, generator, num_features, num_jet, preset)");
  }
  validatePetConfig(c, source);
  return c;
}

void validatePetConfig(const PetConfig& c, const std::string& source) {
  auto bad = [&](const std::string& why) {
    throw InputError(source + ": invalid PET config: " + why);
  };
  if (c.dim <= 0 || c.heads <= 0 || c.dim % c.heads != 0)
    bad("dim must be a positive multiple of heads");
  if (c.blocks < 0 || c.class_layers < 1 || c.gen_layers < 0 || c.local_blocks < 0)
    bad("blocks/gen_layers/local_blocks must be >= 0 and class_layers >= 1");
  if (c.k < 1) bad("k must be >= 1");
  if (c.num_features < 3) bad("num_features must be >= 3");
  if (c.num_jet < 1) bad("num_jet must be >= 1");
  if (c.num_classes < 1) bad("num_classes must be >= 1");
  if (c.fourier_freqs < 2) bad("fourier_freqs must be >= 2");
  if (c.feature_dropout < 0 || c.feature_dropout >= 1) bad("feature_dropout must be in [0, 1)");
  // Beyond these the float parameters overflow when the model is built (layer_scale_init
  // 1e308: "value cannot be converted to type float without overflow").
  if (!(c.norm_eps > 0 && c.norm_eps <= 1)) bad("norm_eps must be in (0, 1] (OmniLearn: 1e-3)");
  if (!(std::fabs(c.layer_scale_init) <= 1e3))
    bad("layer_scale_init must be in [-1000, 1000] (OmniLearn: 1e-5)");
  if (c.feature_dropout_from < 0 || c.feature_dropout_from > c.num_features)
    bad("feature_dropout_from must be a feature index from 0 to num_features (" +
        std::to_string(c.num_features) + ")");
  // An upper estimate of the parameter count (a block is ~8 dim^2; pet.cpp): sizes that no
  // machine could hold are refused here, before the model is built and the process killed.
  const double d = c.dim;
  const double layers =
      static_cast<double>(c.blocks) + c.class_layers + c.gen_layers + c.local_blocks + 1.0;
  const double estimate =
      layers * 10.0 * d * d + 2.0 * c.num_classes * d +
      4.0 * (static_cast<double>(c.num_features) + c.num_jet + c.fourier_freqs) * d;
  if (estimate > kMaxModelParameters) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", estimate);
    bad(std::string("about ") + text + " parameters (dim " + std::to_string(c.dim) + ", " +
        std::to_string(c.blocks) + " blocks, " + std::to_string(c.num_classes) +
        " classes), more than the 2^31 foldfarm trains; check the sizes");
  }
}

PetConfig petConfigFromJson(const nlohmann::json& j, const std::string& source) {
  // Every size is written beside the preset's name: the sizes are the model (the name of a
  // checkpoint written before presets were checked may be none foldfarm knows).
  nlohmann::json sizes = j;
  std::string name;
  if (j.is_object() && j.contains("preset") && j.at("preset").is_string()) {
    name = j.at("preset").get<std::string>();
    sizes.erase("preset");
  }
  PetConfig c = applyPetOverrides(
      name == "omnilearn" || name == "tiny" ? petPreset(name) : PetConfig(), sizes, source);
  if (!name.empty()) c.preset = name;
  return c;
}

}  // namespace foldfarm
