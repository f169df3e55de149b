// The commands a login node runs, without LibTorch: `foldfarm` runs them itself and
// `foldfarm-torch` has them too. They read and mend what campaigns and chains wrote: campaign
// status, cancel, repair and aggregate; slurm status; aggregate, study compare, bench
// aggregate; report. (The data commands, cmd_data.cpp, need no LibTorch either.)
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/foldfarm/commands.hpp"
#include "core/base/error.hpp"
#include "ensembles/aggregate.hpp"
#include "ensembles/aggregate_bench.hpp"
#include "ensembles/campaign_aggregate.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/input_record.hpp"
#include "report/campaign_report.hpp"
#include "slurm/slurm_campaign.hpp"

namespace foldfarm::app {

using nlohmann::json;

CLI::App* addCampaignGroup(CLI::App& root) {
  CLI::App* campaign = root.add_subcommand(
      "campaign",
      "OmniFold campaigns: init, run (local or MPI pilot), status, resume, retry, "
      "cancel, repair, accept-inputs, extend, work, aggregate, plan");
  campaign->require_subcommand(1);
  return campaign;
}

CLI::App* addSlurmGroup(CLI::App& root) {
  CLI::App* s =
      root.add_subcommand("slurm", "Slurm: render batch scripts, run campaigns as job arrays");
  s->require_subcommand(1);
  return s;
}

void registerCampaignStatusCommand(CLI::App& campaign) {
  auto* c =
      campaign.add_subcommand("status", "Counts per state, rate, ETA and failures with reasons");
  auto dir = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  c->add_option("dir", *dir, "Campaign directory")->required();
  auto list_tasks = std::make_shared<bool>(false);
  c->add_flag("--json", *as_json, "Print JSON");
  c->add_flag("--tasks", *list_tasks,
              "Also list every task: id, state, attempts, host, last exit code (the ids "
              "`campaign retry --task` takes; in JSON, \"tasks\")");
  c->callback([dir, as_json, list_tasks] {
    registerCampaignTaskKinds();
    jobs::statusCommand(*dir, *as_json, *list_tasks);
  });
}

void registerSlurmStatusCommand(CLI::App& slurm) {
  auto st = std::make_shared<std::pair<std::string, bool>>();
  CLI::App* ss = slurm.add_subcommand(
      "status",
      "Campaign D on Slurm: ingests finished results, requeues tasks whose job ended, shows jobs");
  ss->add_option("dir", st->first, "Campaign directory")->required();
  ss->add_flag("--json", st->second, "Print as JSON");
  ss->callback([st] {
    registerCampaignTaskKinds();
    nlohmann::json j = slurm::slurmCampaignStatus(st->first);
    if (st->second) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("campaign %s (%s)%s\n", j["campaign"].get<std::string>().c_str(), st->first.c_str(),
                j["watched_elsewhere"].get<bool>() ? " — being watched by another foldfarm" : "");
    std::printf("%s\n", jobs::stateCountsLine(j["counts"]).c_str());
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

void registerCampaignCancelCommand(CLI::App& campaign) {
  auto* c = campaign.add_subcommand(
      "cancel",
      "Cancel every unfinished task (and scancel the campaign's Slurm jobs). While a run "
      "orchestrates the campaign (a local run, an MPI pilot, a Slurm watch) it is asked to: it "
      "stops its running tasks, which keep their state, and cancels the rest. `campaign retry D "
      "--cancelled` runs them again");
  auto dir = std::make_shared<std::string>();
  auto wait = std::make_shared<double>(600);
  c->add_option("dir", *dir, "Campaign directory")->required();
  c->add_option("--wait", *wait,
                "Seconds to wait for a running orchestrator to act on the request (0: ask and "
                "return; the request stands either way)")
      ->capture_default_str();
  c->callback([dir, wait] {
    registerCampaignTaskKinds();
    cancelCampaign(*dir, *wait);
  });
}

void registerCampaignRepairCommand(CLI::App& campaign) {
  auto* c = campaign.add_subcommand(
      "repair",
      "Rebuild a missing or damaged journal from the spec and the task results on disk "
      "(successful tasks stay done; the rest run again); the damaged files are kept. Also "
      "restores a damaged or lost spec.json from the journal's copy, and gives inputs copied "
      "again with the bytes `campaign init` read (their sha256) back their recorded times");
  auto dir = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto as_json = std::make_shared<bool>(false);
  c->add_option("dir", *dir, "Campaign directory")->required();
  c->add_flag("--force", *force, "Rebuild even when the journal passes its checks");
  c->add_flag("--json", *as_json, "Print JSON");
  c->callback([dir, force, as_json] {
    registerCampaignTaskKinds();
    jobs::repairCommand(*dir, *force, *as_json);
  });
}

void registerCampaignAggregateCommand(CLI::App& campaign) {
  auto* c = campaign.add_subcommand(
      "aggregate", "Aggregate the done chains into uncertainty bands (D/aggregate)");
  auto dir = std::make_shared<std::string>();
  auto truth = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto args = std::make_shared<AggregateArgs>();
  c->add_option("dir", *dir, "Campaign directory")->required();
  c->add_option("--truth", *truth, "Truth file (default: the spec's inputs.truth when given)");
  c->add_option("--out", *out,
                "Output directory (default D/aggregate, where `report` looks; another keeps "
                "D/aggregate as it is, e.g. for a second binning: `report D --aggregate OUT "
                "--out OUT/report.html`; `retry`, `extend` and `accept-inputs` move only "
                "D/aggregate aside: aggregate OUT again after them)");
  addAggregateOptions(*c, *args);
  c->callback([dir, truth, out, args] {
    registerCampaignTaskKinds();
    const json r =
        ensembles::aggregateCampaign(*dir, *truth, *args, /*all_done=*/false, *out).toJson();
    std::printf("%s\n", ensembles::aggregationLine(*dir, r).c_str());
  });
}

void cancelCampaign(const std::string& dir, double wait_s) {
  if (!slurm::campaignUsedSlurm(dir)) {
    jobs::cancelCommand(dir, wait_s);
    return;
  }
  // Here, or by the watch that holds the campaign (it scancels the jobs itself).
  std::optional<slurm::SlurmCancelSummary> here;
  jobs::cancelCommand(dir, wait_s, [&here](jobs::Campaign& c) {
    here = slurm::cancelOnSlurm(c);
    return here->tasksCancelled;
  });
  if (!here) return;
  std::string jobs;
  for (const auto& id : here->jobsCancelled) jobs += " " + id;
  std::printf("campaign %s: Slurm job(s) cancelled:%s\n", dir.c_str(),
              jobs.empty() ? " none" : jobs.c_str());
}

namespace {

void registerAggregate(CommandGroups& g) {
  struct Opts {
    std::vector<std::string> runs;
    std::string out, truth;
    AggregateArgs aggregate;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.root.add_subcommand(
      "aggregate",
      "Aggregate OmniFold chains into bands: replica = mean over members, nominal = mean over "
      "replicas, std / 16-84 / 2.5-97.5 percentiles, covariance; writes bands.h5, summary.json "
      "and one PNG per observable");
  cmd->add_option("--runs", o->runs,
                  "chain output directories or directories containing them (searched "
                  "recursively), space-separated")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--truth", o->truth,
                  "unfolding file whose gen level is the truth (gen_subs; weights and pass_gen "
                  "honoured): adds triangular discriminators and coverage");
  addAggregateOptions(*cmd, o->aggregate);
  cmd->callback([o] {
    std::optional<std::string> truth;
    if (!o->truth.empty()) truth = o->truth;
    std::cout << ensembles::aggregateRunsWithOptions(o->runs, o->out, truth, o->aggregate.options())
                     .dump(2)
              << std::endl;
  });
}

void registerCompare(CommandGroups& g) {
  struct Opts {
    std::vector<std::string> dirs;
    std::vector<std::string> names;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.study.add_subcommand(
      "compare",
      "Compare unfoldings of the same data side by side (e.g. PET chains and the observable-level "
      "MLP baseline): per observable, Δ x10^3 of the prior, the statistical floor, and each "
      "one's Δ ± spread over replicas and recovered shift of the mean (the smallest Δ in bold "
      "where it is below the others clearly: paired replica by replica, by more than Student's "
      "t (97.5%, n - 1) standard errors of the difference over the n replicas both hold; "
      "unpaired, by more than 2 errors)");
  cmd->add_option("dirs", o->dirs,
                  "aggregation directories, or campaign directories (their aggregate/), "
                  "space-separated")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--names", o->names, "labels of the inputs, in order (default: their classifier)")
      ->delimiter(',');
  cmd->add_flag("--json", o->json, "print JSON instead of a Markdown table");
  cmd->callback([o] {
    const nlohmann::json c = ensembles::compareAggregations(o->dirs, o->names);
    if (o->json)
      std::cout << c.dump(2) << std::endl;
    else
      std::cout << ensembles::comparisonMarkdown(c);
  });
}

void registerBenchAggregate(CommandGroups& g) {
  struct Opts {
    ensembles::AggregateBenchOptions bench;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = g.bench.add_subcommand(
      "aggregate",
      "Aggregation of a campaign's worth of synthetic chains (histograms.h5 + result.json): "
      "chains/s and peak memory, the nominal alone and with systematic variations");
  cmd->add_option("--replicas", o->bench.replicas, "nominal replicas")
      ->check(CLI::Range(2, 1000000))
      ->capture_default_str();
  cmd->add_option("--members", o->bench.members, "ensemble members per replica")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--variation-replicas", o->bench.variation_replicas,
                  "replicas of each variation: a detector pair, a modelling variation, an "
                  "MC-statistics variation (0: the nominal alone)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  cmd->add_option("--rebin-events", o->bench.rebin_events,
                  "time `aggregate --binning` too: the nominal chains rebinned from per-event "
                  "weights over a synthetic simulation of this many events (0: not timed)")
      ->check(CLI::Range(0, 100000000))
      ->capture_default_str();
  cmd->add_option("--rebin-iterations", o->bench.rebin_iterations,
                  "iterations (push rows) of each chain's weights when rebinning")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--scratch", o->bench.scratch, "where the synthetic chains go")
      ->capture_default_str();
  cmd->add_flag("--keep", o->bench.keep, "keep the synthetic chains and their aggregations");
  cmd->add_flag("--json", o->json, "Print JSON on stdout");
  cmd->callback([o] {
    const nlohmann::json r = ensembles::benchAggregate(o->bench);
    if (o->json) {
      std::cout << r.dump(2) << std::endl;
      return;
    }
    auto line = [&](const char* what, const nlohmann::json& t) {
      std::printf("%s: %lld chains in %.2f s: %.0f chains/s (%.2f ms/chain)\n", what,
                  static_cast<long long>(t["chains"].get<int64_t>()), t["seconds"].get<double>(),
                  t["chains_per_s"].get<double>(),
                  1e3 / std::max(1e-9, t["chains_per_s"].get<double>()));
    };
    line("write (synthetic chains)", r["write"]);
    line("aggregate nominal", r["nominal"]);
    if (r.contains("with_variations")) line("aggregate with variations", r["with_variations"]);
    if (r.contains("rebinned")) {
      line("aggregate nominal, rebinned from weights", r["rebinned"]);
      std::printf("  %.3g events histogrammed per second (%d events, %d iterations)\n",
                  r["rebinned"]["events_per_s"].get<double>(), r["rebin_events"].get<int>(),
                  r["rebin_iterations"].get<int>());
    }
    std::printf("peak resident memory %.0f MB\n", r["peak_rss_MB"].get<double>());
    if (r.contains("dir")) std::printf("kept in %s\n", r["dir"].get<std::string>().c_str());
  });
}

}  // namespace

void registerAggregationCommands(CommandGroups& g) {
  registerAggregate(g);
  registerBenchAggregate(g);
  registerCompare(g);
}

void registerReportCommand(CommandGroups& g) {
  auto o = std::make_shared<report::ReportOptions>();
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = g.root.add_subcommand(
      "report",
      "Write one self-contained HTML page about a campaign: unfolded distributions with bands, "
      "the Δ table, correlations, weight diagnostics, journal statistics and throughput, "
      "warm-start curves (sections without input are omitted with a note)");
  cmd->add_option("dir", *dir, "campaign directory (from `foldfarm campaign init --dir`)")
      ->required();
  cmd->add_option("--out", o->out, "output HTML file (default D/report.html; written atomically)");
  cmd->add_option("--aggregate", o->aggregate_dir,
                  "aggregation directory with bands.h5, summary.json, PNGs (default D/aggregate)");
  cmd->add_option("--warmstart", o->warmstart_dir,
                  "warm-start study output directory (default D/warmstart)");
  cmd->add_option(
      "--baseline", o->baseline_dir,
      "aggregation (or campaign) directory of a baseline unfolding of the same data, "
      "e.g. a campaign with \"classifier\": \"mlp\": its Δ and recovered shift are shown "
      "beside this campaign's");
  cmd->callback([o, dir] {
    registerCampaignTaskKinds();  // opening a campaign validates its task kind
    report::ReportResult r = report::writeCampaignReport(*dir, *o);
    std::string omitted;
    for (const auto& s : r.omitted) omitted += "\n  omitted " + s;
    std::printf("%s: %zu sections, %d figures, %zu KiB%s\n", r.path.c_str(), r.sections.size(),
                r.images, r.bytes / 1024, omitted.c_str());
  });
}

void registerLoginCommands(CommandGroups& g) {
  CLI::App* campaign = addCampaignGroup(g.root);
  registerCampaignStatusCommand(*campaign);
  registerCampaignCancelCommand(*campaign);
  registerCampaignRepairCommand(*campaign);
  registerCampaignAggregateCommand(*campaign);
  registerSlurmStatusCommand(*addSlurmGroup(g.root));
  registerAggregationCommands(g);
  registerReportCommand(g);
}

}  // namespace foldfarm::app
