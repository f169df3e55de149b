#pragma once
// Training config files, as `pretrain`, `finetune` and `model info` take them (--config):
//
//   {"model": {PET size overrides (core/model/pet_config.hpp)},
//    "train": {"lr": 3e-4, "epochs": 20, ...}}
//
// or a bare object of size overrides. The recipe ("train") keys: batch_size, clip_norm,
// ema_decay, epochs, lr, lr_factor, optimizer, patience, warmup_epochs, weight_decay. Every key
// and type is checked when the file is read, before any data is; the ranges are the trainer's
// (validateTrainOptions), checked once the options are complete.
//
// Per recipe key, the value a run uses is: the option given on the command line, else the
// file's "train", else the command's default. The CLI sets the options (defaults or given),
// then applies the file's recipe less the keys whose options were given:
//
//   const TrainConfigFile file = readTrainConfigFile(path);   // empty when path is ""
//   PetConfig model = petConfigFrom("tiny", file);
//   TrainOptions t = ...the command's options...;
//   nlohmann::json recipe = recipeUnlessGiven(file, given, {{"epochs", "epochs"}, …});
//   applyTrainRecipe(recipe, file.path, t);
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model/pet_config.hpp"

namespace foldfarm {

struct TrainOptions;
struct ClassifierFitOptions;

// The recipe keys, sorted.
const std::vector<std::string>& trainRecipeKeys();

struct TrainConfigFile {
  std::string path;                                 // "" when no file was given
  nlohmann::json model = nlohmann::json::object();  // PET size overrides ({}: none)
  nlohmann::json train = nlohmann::json::object();  // the recipe, keys and types checked
};

// Reads and checks `path` ("" gives an empty file). InputError naming the file and the key
// for a file that is not JSON, an unknown top-level or recipe key, or a value of the wrong type
// or sign.
TrainConfigFile readTrainConfigFile(const std::string& path);

// The preset with the file's size overrides (InputError naming the file and key).
PetConfig petConfigFrom(const std::string& preset, const TrainConfigFile& file);
// InputError naming `source` when `model` (a config's PET overrides) sets num_classes or
// generator, which each command sets itself (they were overwritten without a word before).
void refuseCommandSetPetKeys(const nlohmann::json& model, const std::string& source);

// The file's recipe less the keys whose options were given on the command line: `given` holds
// the long names (without dashes) of the options given, `options` pairs an option's name with
// its recipe key ({"lr-factor", "lr_factor"}).
nlohmann::json recipeUnlessGiven(
    const TrainConfigFile& file, const std::set<std::string>& given,
    std::initializer_list<std::pair<const char*, const char*>> options);

// Each recipe key of `recipe` replaces the matching option (keys and types checked as when a
// file is read; `source` names the recipe in errors). A one-logit fit (finetune) has no EMA:
// ema_decay is refused there.
void applyTrainRecipe(const nlohmann::json& recipe, const std::string& source, TrainOptions& t);
void applyTrainRecipe(const nlohmann::json& recipe, const std::string& source,
                      ClassifierFitOptions& f);

}  // namespace foldfarm
