// The commands that both executables run (no LibTorch): `campaign status`, `slurm status`
// and `data inspect`, what a login node runs often and wants answered at once, and the
// groups they belong to.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/data/inspect.hpp"
#include "core/data/jet_files.hpp"
#include "jobs/campaign_commands.hpp"
#include "slurm/slurm_campaign.hpp"

namespace foldfarm::app {

using data::countJetsInFiles;
using data::expandDatasetFiles;
using data::formatSummary;
using data::summarizeFile;

CLI::App* addCampaignGroup(CLI::App& root) {
  CLI::App* campaign = root.add_subcommand(
      "campaign",
      "OmniFold campaigns: init, run (local or MPI pilot), status, resume, retry, "
      "cancel, repair, work, aggregate, plan");
  campaign->require_subcommand(1);
  return campaign;
}

CLI::App* addSlurmGroup(CLI::App& root) {
  CLI::App* s =
      root.add_subcommand("slurm", "Slurm: render batch scripts, run campaigns as job arrays");
  s->require_subcommand(1);
  return s;
}

CLI::App* addDataGroup(CLI::App& root) {
  CLI::App* data =
      root.add_subcommand("data", "Jet datasets: synthesise, inspect, convert, observables");
  data->require_subcommand(1);
  return data;
}

void printCounts(const nlohmann::json& counts) {
  std::printf("%d done, %d running, %d pending, %d failed, %d cancelled\n", counts.value("done", 0),
              counts.value("running", 0), counts.value("pending", 0), counts.value("failed", 0),
              counts.value("cancelled", 0));
}

void registerCampaignStatusCommand(CLI::App& campaign, void (*register_task_kinds)()) {
  auto* c =
      campaign.add_subcommand("status", "Counts per state, rate, ETA and failures with reasons");
  auto dir = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  c->add_option("dir", *dir, "Campaign directory")->required();
  c->add_flag("--json", *as_json, "Print JSON");
  c->callback([dir, as_json, register_task_kinds] {
    register_task_kinds();
    jobs::statusCommand(*dir, *as_json);
  });
}

void registerSlurmStatusCommand(CLI::App& slurm, void (*register_task_kinds)()) {
  auto st = std::make_shared<std::pair<std::string, bool>>();
  CLI::App* ss = slurm.add_subcommand(
      "status",
      "Campaign D on Slurm: ingests finished results, requeues tasks whose job ended, shows jobs");
  ss->add_option("dir", st->first, "Campaign directory")->required();
  ss->add_flag("--json", st->second, "Print as JSON");
  ss->callback([st, register_task_kinds] {
    register_task_kinds();
    nlohmann::json j = slurm::slurmCampaignStatus(st->first);
    if (st->second) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("campaign %s (%s)%s\n", j["campaign"].get<std::string>().c_str(), st->first.c_str(),
                j["watched_elsewhere"].get<bool>() ? " — being watched by another foldfarm" : "");
    printCounts(j["counts"]);
    if (!j["slurm_reachable"].get<bool>()) std::printf("Slurm is not reachable from here\n");
    for (const auto& job : j["jobs"]) {
      std::printf("  job %-12s %-10s %-16s %d task(s)\n", job["id"].get<std::string>().c_str(),
                  job["state"].get<std::string>().c_str(), job["reason"].get<std::string>().c_str(),
                  job["tasks"].get<int>());
    }
    if (j["requeued"].get<int>() > 0)
      std::printf("%d task(s) back to pending (their job ended without a result)\n",
                  j["requeued"].get<int>());
  });
}

void registerDataInspectCommand(CLI::App& data) {
  auto insp_file = std::make_shared<std::string>();
  auto insp_json = std::make_shared<bool>(false);
  CLI::App* i = data.add_subcommand(
      "inspect", "Datasets, shapes, label balance, multiplicity and jet summaries");
  i->add_option("files", *insp_file,
                "HDF5 file, or a dataset of jets files: paths, glob patterns or @LIST, "
                "comma-separated (each file is summarised; they must share the layout)")
      ->required();
  i->add_flag("--json", *insp_json, "Print JSON on stdout instead of a table");
  i->callback([insp_file, insp_json] {
    const std::vector<std::string> files = expandDatasetFiles(*insp_file);
    if (files.size() == 1) {
      const auto summary = summarizeFile(files[0]);
      if (*insp_json) {
        std::cout << summary.dump(2) << std::endl;
      } else {
        std::cout << formatSummary(summary);
      }
      return;
    }
    countJetsInFiles(files);  // refuses the first file whose layout differs, by name
    nlohmann::json all = {{"files", nlohmann::json::array()}, {"jets", 0}};
    for (const auto& f : files) {
      nlohmann::json one = summarizeFile(f);
      all["jets"] = all["jets"].get<int64_t>() + one.value("jets", int64_t{0});
      all["files"].push_back(std::move(one));
    }
    if (*insp_json) {
      std::cout << all.dump(2) << std::endl;
      return;
    }
    for (const auto& one : all["files"]) std::cout << formatSummary(one) << "\n";
    std::cout << files.size() << " files, " << all["jets"].get<int64_t>()
              << " jets in all, one layout\n";
  });
}

}  // namespace foldfarm::app
