#include "core/train/checkpoint.hpp"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/file_stat.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/sha256.hpp"
#include "core/build_info/build_info.hpp"
#include "core/train/torch_error.hpp"

namespace foldfarm {

namespace fs = std::filesystem;
using torch::Tensor;

namespace {

constexpr const char* kFormat = "foldfarm-checkpoint-1";

std::string shapeText(const Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

bool checkpointExists(const std::string& dir) {
  return fs::exists(fs::path(dir) / "meta.json");
}

namespace {
std::string outputOf(const fs::path& dir) {
  const auto has = [&](const char* name) { return fs::exists(dir / name); };
  if ((has("result.json") && has("histograms.h5")) || has("state/progress.json"))
    return "an OmniFold chain (`foldfarm unfold --out`)";
  if (has("spec.json") && has("journal.sqlite"))
    return "a campaign (`foldfarm campaign init --dir`)";
  if (has("summary.json") && has("bands.h5")) return "an aggregation (`foldfarm aggregate --out`)";
  return "";
}
}  // namespace

std::string otherCommandsOutput(const std::string& dir) {
  const fs::path path = fs::absolute(dir).lexically_normal();
  if (std::string what = outputOf(path); !what.empty()) return "holds " + what;
  // Below one too (a campaign's tasks/, a chain's state/): its files are the other command's.
  for (fs::path p = path.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path())
    if (std::string what = outputOf(p); !what.empty())
      return "is inside " + what + " at " + p.string();
  return "";
}

bool checkpointHoldsTensors(const std::string& dir, const std::map<std::string, Tensor>& tensors) {
  if (!checkpointExists(dir)) return false;
  Checkpoint held;
  try {
    held = readCheckpoint(dir);
  } catch (const std::exception&) {
    return false;  // damaged: written again
  }
  if (held.tensors.size() != tensors.size()) return false;
  for (const auto& [name, t] : tensors) {
    const auto it = held.tensors.find(name);
    if (it == held.tensors.end()) return false;
    const Tensor mine = t.detach().cpu();
    if (it->second.scalar_type() != mine.scalar_type() || it->second.sizes() != mine.sizes() ||
        !torch::equal(it->second, mine))
      return false;
  }
  return true;
}

void writeCheckpoint(const std::string& dir, const CheckpointMeta& meta,
                     const std::map<std::string, Tensor>& tensors) {
  MadeDirectories made(dir);  // removed again if the first write fails

  c10::Dict<std::string, Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().cpu().contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  const std::string payload_sha = sha256Hex(std::string_view(bytes.data(), bytes.size()));
  const std::string payload_name = "tensors-" + payload_sha.substr(0, 16) + ".pt";
  const fs::path payload_path = fs::path(dir) / payload_name;
  std::error_code ec;
  const bool payload_new = !fs::exists(payload_path, ec);
  {
    AtomicFile f(payload_path.string());
    f.write(std::string_view(bytes.data(), bytes.size()));
    f.commit();
  }

  nlohmann::json j;
  j["format"] = kFormat;
  j["foldfarm_version"] = FOLDFARM_VERSION;
  // Which build wrote it (in the checksum: the description names its maker). A checkpoint is
  // never rewritten to match another build: a training resumed after it finished keeps it.
  j["build"] = buildInfoJson();
  j["config"] = petConfigToJson(meta.config);
  j["feature_stats"] = meta.stats.toJson();
  j["class_names"] = meta.class_names;
  j["training"] = meta.training;
  j["extra"] = meta.extra;
  j["payload"] = {{"file", payload_name}, {"sha256", payload_sha}, {"tensors", tensors.size()}};
  j["meta_sha256"] = sha256Hex(j.dump());
  try {
    writeFileAtomic((fs::path(dir) / "meta.json").string(), j.dump(2) + "\n");
  } catch (...) {
    if (payload_new) fs::remove(payload_path, ec);  // no payload without its description
    throw;
  }
  made.keep();

  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("tensors-", 0) == 0 && name != payload_name && entry.path().extension() == ".pt")
      fs::remove(entry.path(), ec);
  }
}

namespace {

// A training's state (state/: the optimiser's moments beside the weights, written while it
// trains) is not a trained model: refused as a starting point, naming it.
void refuseTrainingState(const std::string& dir) {
  nlohmann::json j;
  try {
    j = readJsonFile((fs::path(dir) / "meta.json").string(), "");
  } catch (const Error&) {
    return;  // readCheckpoint says what is wrong with it
  }
  if (j.is_object() && j.contains("training") && j["training"].is_object() &&
      j["training"].contains("optimizer_state"))
    throw InputError(dir +
                     ": the state of a training (its optimiser's moments beside the weights, "
                     "written while it trains), not a trained model; pass the training's output "
                     "directory once it has finished (its model/)");
}

}  // namespace

std::string resolveCheckpointDir(const std::string& given) {
  std::error_code ec;
  // A checkpoint's meta.json named itself: its directory.
  const std::string dir =
      fs::path(given).filename() == "meta.json" && fs::is_regular_file(given, ec)
          ? fs::path(given).parent_path().string()
          : given;
  if (fs::is_regular_file(fs::path(dir) / "meta.json", ec)) {
    refuseTrainingState(dir);
    return dir;
  }
  if (fs::is_regular_file(fs::path(dir) / "model" / "meta.json", ec))
    return (fs::path(dir) / "model").string();
  if (!fs::exists(dir, ec))
    throw InputError(dir +
                     ": no such directory; pass the output of `foldfarm pretrain` or `finetune` "
                     "(holding model/meta.json), or a checkpoint directory (holding meta.json)");
  // A training's output directory before its model: it is still training, or it stopped.
  if (fs::is_regular_file(fs::path(dir) / "state" / "meta.json", ec))
    throw InputError(dir +
                     ": its training has not finished (it holds a training state, state/, but "
                     "no model/ yet): let it finish, or continue it with the same command and "
                     "--resume, then pass this directory again");
  throw InputError(dir +
                   ": not a checkpoint directory (no meta.json, nor model/meta.json); pass "
                   "the output of `foldfarm pretrain` or `finetune` (holding model/meta.json), "
                   "or a checkpoint directory (holding meta.json)");
}

std::string checkpointIdentity(const std::string& dir) {
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const nlohmann::json j = readJsonFile(meta_path, "");
  if (!j.is_object() || !j.contains("meta_sha256") || !j.at("meta_sha256").is_string())
    throw InputError(meta_path + ": no meta_sha256: not a foldfarm checkpoint, or a damaged one");
  return j.at("meta_sha256").get<std::string>();
}

Checkpoint readCheckpoint(const std::string& dir) {
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  if (!fs::exists(meta_path))
    throw InputError(dir +
                     ": not a foldfarm checkpoint (no meta.json); pass a directory written "
                     "by foldfarm pretrain/finetune");
  const nlohmann::json j =
      readJsonFile(meta_path,
                   "the checkpoint metadata is damaged: restore the checkpoint from a "
                   "copy or retrain");
  if (!j.is_object() || j.value("format", "") != kFormat || !j.contains("meta_sha256") ||
      !j.contains("payload"))
    throw InputError(meta_path + ": not a " + kFormat +
                     " checkpoint; pass a directory written by this foldfarm version");
  nlohmann::json body = j;
  body.erase("meta_sha256");
  const std::string meta_sha = j.at("meta_sha256").get<std::string>();
  if (sha256Hex(body.dump()) != meta_sha)
    throw InputError(meta_path +
                     ": checksum mismatch in the checkpoint metadata (edited or "
                     "corrupt); restore the checkpoint from a copy or retrain");

  const std::string payload_name = j.at("payload").at("file").get<std::string>();
  const std::string payload_path = (fs::path(dir) / payload_name).string();
  if (!statPath(payload_path).regular)
    throw InputError(payload_path +
                     ": missing (named by meta.json): the checkpoint is incomplete; copy it "
                     "again whole, or retrain");
  const std::string bytes_str = readFile(payload_path);
  const std::string expected = j.at("payload").at("sha256").get<std::string>();
  const std::string actual = sha256Hex(bytes_str);
  if (actual != expected)
    throw InputError(payload_path + ": checksum mismatch (expected sha256 " +
                     expected.substr(0, 16) + "..., file has " + actual.substr(0, 16) +
                     "...): the checkpoint is corrupt; restore it from a copy or retrain");

  Checkpoint ck;
  ck.dir = dir;
  try {
    ck.meta.config = petConfigFromJson(j.at("config"), meta_path);
    ck.meta.stats = data::FeatureStats::fromJson(j.at("feature_stats"));
    ck.meta.class_names = j.at("class_names").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(meta_path + ": malformed checkpoint metadata (" + jsonErrorReason(e) +
                     "); retrain");
  }
  ck.meta.training = j.value("training", nlohmann::json());
  ck.build = j.value("build", nlohmann::json());
  ck.meta.extra = j.value("extra", nlohmann::json());

  const std::vector<char> bytes(bytes_str.begin(), bytes_str.end());
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw InputError(payload_path + ": cannot decode tensors (" +
                     exceptionMessage(e).substr(0, 200) +
                     "); restore the checkpoint from a copy or retrain");
  }
  if (!value.isGenericDict())
    throw InputError(payload_path + ": unexpected payload type; restore the checkpoint or retrain");
  for (const auto& item : value.toGenericDict())
    ck.tensors[item.key().toStringRef()] = item.value().toTensor();
  return ck;
}

void addModelTensors(Pet& model, const std::string& prefix, std::map<std::string, Tensor>& out) {
  for (const auto& item : model->named_parameters(true))
    out[prefix + item.key()] = item.value().detach().clone();
  for (const auto& item : model->named_buffers(true))
    out[prefix + item.key()] = item.value().detach().clone();
}

void loadModelTensors(Pet& model, const std::map<std::string, Tensor>& tensors,
                      const std::string& prefix, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, Tensor& dst) {
    auto it = tensors.find(prefix + name);
    if (it == tensors.end())
      throw InputError(source + ": checkpoint lacks tensor '" + prefix + name +
                       "'; it was written for a different model: use a matching --preset/--config");
    if (!it->second.sizes().equals(dst.sizes()))
      throw InputError(source + ": tensor '" + prefix + name + "' has shape " +
                       shapeText(it->second) + " but the model expects " + shapeText(dst) +
                       "; use a matching --preset/--config");
    dst.copy_(it->second);
  };
  for (auto& item : model->named_parameters(true)) load(item.key(), item.value());
  for (auto& item : model->named_buffers(true)) load(item.key(), item.value());
}

std::string WarmStartReport::summary() const {
  std::string s = "loaded " + std::to_string(loaded.size()) + " tensors, skipped " +
                  std::to_string(skipped.size());
  for (size_t i = 0; i < skipped.size(); ++i) s += (i == 0 ? ": " : "; ") + skipped[i];
  return s;
}

WarmStartReport warmStart(Pet& model, const Checkpoint& ckpt) {
  torch::NoGradGuard no_grad;
  WarmStartReport r;
  auto visit = [&](const std::string& name, Tensor& dst) {
    auto it = ckpt.tensors.find("model." + name);
    if (it == ckpt.tensors.end()) {
      r.skipped.push_back(name + " (missing in checkpoint)");
    } else if (!it->second.sizes().equals(dst.sizes())) {
      r.skipped.push_back(name + " (checkpoint " + shapeText(it->second) + " vs model " +
                          shapeText(dst) + ")");
    } else {
      dst.copy_(it->second);
      r.loaded.push_back(name);
    }
  };
  for (auto& item : model->named_parameters(true)) visit(item.key(), item.value());
  for (auto& item : model->named_buffers(true)) visit(item.key(), item.value());
  return r;
}

void requireSameConfig(const Checkpoint& ckpt, const PetConfig& expected,
                       const std::string& what_to_do) {
  if (ckpt.meta.config == expected) return;
  std::string diff;
  bool classes_only = true;
  const auto a = petConfigToJson(ckpt.meta.config), b = petConfigToJson(expected);
  for (const auto& [key, value] : a.items())
    if (b.at(key) != value) {
      diff += (diff.empty() ? "" : ", ") + key + " " + value.dump() + " vs " + b.at(key).dump();
      classes_only = classes_only && key == "num_classes";
    }
  // The classes come from the data's labels, not from a preset or a config.
  throw InputError(
      ckpt.dir + ": checkpoint was written for a different model config (" + diff + "); " +
      (classes_only ? "the classes come from the training data's labels: this data has " +
                          std::to_string(expected.num_classes) + " classes, the checkpoint's " +
                          std::to_string(ckpt.meta.config.num_classes) +
                          "; use the data it was written with, or a new output directory"
                    : what_to_do));
}

Pet loadPet(const Checkpoint& ckpt, bool prefer_ema) {
  Pet model(ckpt.meta.config);
  const bool ema = prefer_ema && ckpt.tensors.count("ema.body.in1.weight") > 0;
  loadModelTensors(model, ckpt.tensors, ema ? "ema." : "model.", ckpt.dir);
  return model;
}

}  // namespace foldfarm
