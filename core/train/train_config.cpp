#include "core/train/train_config.hpp"

#include <algorithm>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/json_file.hpp"
#include "core/base/json_value.hpp"
#include "core/train/classifier_trainer.hpp"
#include "core/train/trainer.hpp"

namespace foldfarm {
namespace {

using nlohmann::json;

// Keys and types of a recipe; the ranges are the trainer's. A count is a JSON integer (2.5 and
// 4294967297 would be truncated or wrapped by get<int>()).
void checkRecipe(const json& recipe, const std::string& source) {
  if (!recipe.is_object()) throw InputError(source + ": \"train\" must be an object");
  const auto& keys = trainRecipeKeys();
  for (auto it = recipe.begin(); it != recipe.end(); ++it) {
    if (!std::binary_search(keys.begin(), keys.end(), it.key()))
      throw InputError(source + ": unknown train key '" + it.key() + "'");
    const std::string what = source + ": 'train." + it.key() + "'";
    if (it.key() == "optimizer") {
      jsonValue<std::string>(*it, what);
    } else if (it.key() == "batch_size" || it.key() == "epochs") {
      if (jsonValue<int>(*it, what) < 1) throw InputError(what + " must be >= 1");
    } else if (it.key() == "patience") {
      if (jsonValue<int>(*it, what) < 0) throw InputError(what + " must be >= 0 (0: off)");
    } else if (jsonValue<double>(*it, what) < 0) {
      throw InputError(what + " must be >= 0");
    }
  }
}

// The fields both option structs share, set from `recipe` (checked).
template <class Apply>
void forEachKey(const json& recipe, const std::string& source, Apply&& apply) {
  checkRecipe(recipe, source);
  for (auto it = recipe.begin(); it != recipe.end(); ++it) apply(it.key(), *it);
}

}  // namespace

const std::vector<std::string>& trainRecipeKeys() {
  static const std::vector<std::string> keys = {
      "batch_size", "clip_norm", "ema_decay", "epochs",        "lr",
      "lr_factor",  "optimizer", "patience",  "warmup_epochs", "weight_decay"};
  return keys;
}

TrainConfigFile readTrainConfigFile(const std::string& path) {
  TrainConfigFile f;
  f.path = path;
  if (path.empty()) return f;
  const json j = readJsonFile(path, "fix the file");
  if (!j.is_object())
    throw InputError(path + ": a config must be a JSON object with \"model\" and/or \"train\"");
  if (!j.contains("model") && !j.contains("train")) {
    // A bare object of size overrides (numbers); an object under a key is a misspelt section.
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.value().is_object())
        throw InputError(path + ": unknown top-level key '" + it.key() +
                         "' (a config holds \"model\" and \"train\", or the model's sizes "
                         "at the top level)");
    f.model = std::move(j);
    return f;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "model" && it.key() != "train")
      throw InputError(path + ": unknown top-level key '" + it.key() +
                       "' (use \"model\" and \"train\")");
  }
  if (j.contains("train")) {
    checkRecipe(j.at("train"), path);
    f.train = j.at("train");
  }
  if (j.contains("model")) {
    if (!j.at("model").is_object()) throw InputError(path + ": \"model\" must be an object");
    f.model = j.at("model");
  }
  return f;
}

void refuseCommandSetPetKeys(const json& model, const std::string& source) {
  if (!model.is_object()) return;
  if (model.contains("num_classes"))
    throw InputError(source +
                     ": 'model.num_classes' is not a config's to set: each command sets it "
                     "(pretrain from the classes of its data, finetune and unfold train one "
                     "logit, `model info` takes --classes); remove it");
  if (model.contains("generator"))
    throw InputError(source +
                     ": 'model.generator' is not a config's to set: pretrain trains the "
                     "generator head, finetune and unfold do not (`model info` takes "
                     "--generator); remove it");
}

nlohmann::json recipeUnlessGiven(
    const TrainConfigFile& file, const std::set<std::string>& given,
    std::initializer_list<std::pair<const char*, const char*>> options) {
  nlohmann::json recipe = file.train;
  for (const auto& [option, key] : options)
    if (given.count(option) > 0) recipe.erase(key);
  return recipe;
}

PetConfig petConfigFrom(const std::string& preset, const TrainConfigFile& file) {
  refuseCommandSetPetKeys(file.model, file.path);
  PetConfig cfg = petPreset(preset);
  if (!file.model.empty()) cfg = applyPetOverrides(cfg, file.model, file.path);
  return cfg;
}

void applyTrainRecipe(const json& recipe, const std::string& source, TrainOptions& t) {
  forEachKey(recipe, source, [&](const std::string& k, const json& v) {
    if (k == "batch_size") t.batch_size = v.get<int64_t>();
    if (k == "clip_norm") t.clip_norm = v.get<double>();
    if (k == "ema_decay") t.ema_decay = v.get<double>();
    if (k == "epochs") t.max_epochs = v.get<int64_t>();
    if (k == "lr") t.optimizer.lr = v.get<double>();
    if (k == "lr_factor") t.optimizer.lr_factor = v.get<double>();
    if (k == "optimizer") t.optimizer.kind = v.get<std::string>();
    if (k == "patience") t.patience = v.get<int64_t>();
    if (k == "warmup_epochs") t.warmup_epochs = v.get<double>();
    if (k == "weight_decay") t.optimizer.weight_decay = v.get<double>();
  });
}

void applyTrainRecipe(const json& recipe, const std::string& source, ClassifierFitOptions& f) {
  forEachKey(recipe, source, [&](const std::string& k, const json& v) {
    if (k == "batch_size") f.batch_size = v.get<int64_t>();
    if (k == "clip_norm") f.clip_norm = v.get<double>();
    if (k == "ema_decay")
      throw InputError(source +
                       ": 'train.ema_decay': a one-logit fit keeps no EMA of its weights; "
                       "remove the key");
    if (k == "epochs") f.max_epochs = v.get<int64_t>();
    if (k == "lr") f.lr = v.get<double>();
    if (k == "lr_factor") f.lr_factor = v.get<double>();
    if (k == "optimizer") f.optimizer = v.get<std::string>();
    if (k == "patience") f.patience = v.get<int64_t>();
    if (k == "warmup_epochs") f.warmup_epochs = v.get<double>();
    if (k == "weight_decay") f.weight_decay = v.get<double>();
  });
}

}  // namespace foldfarm
