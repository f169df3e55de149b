#pragma once
// `foldfarm report D`: one self-contained HTML page about a campaign (plots embedded as
// base64 PNG, CSS inline, no script, no external resource), its header naming the build that
// wrote it (version and commit: core/build_info/build_info.hpp). Sections, each omitted with a
// one-line note when its input is absent (never faked):
//   overview       the spec (kind, R x M, executor, resources) and headline numbers, the
//                  builds that aggregated and finished the chains (summary.json)
//   distributions  unfolded densities with 68%/95% bands, truth and prior, ratio panels:
//                  the aggregation's <obs>.png, or rendered here from bands.h5 (gnuplot)
//   uncertainties  relative size of each uncertainty per observable (summary.json
//                  "uncertainty": stat, mc_stat, each systematic source, non_closure, total),
//                  the variations run, and the aggregation's <obs>_breakdown.png figures
//   delta          Δ x10^3 against the truth of the prior and of the unfolded result (± the
//                  spread over replicas), the statistical floor of Δ, the fraction of the
//                  prior-to-truth shift of the mean recovered, the 68%/95% band coverage
//                  and the total band's 68% coverage (summary.json), and a baseline's Δ
//                  and shift when one is given
//   correlations   bin-to-bin correlation heat maps (bands.h5 <obs>/correlation)
//   weights        ESS and clipped / non-finite weights per OmniFold step (chain histories)
//   campaign       tasks per state, attempts, failures and their reasons, run time,
//                  GPU-/CPU-hours (journal)
//   throughput     completed tasks against time (journal events)
//   warmstart      validation-loss curves of a warm-start study, when one was run
// Inputs: D (a campaign directory, jobs/campaign.hpp), D/aggregate/ (bands.h5,
// summary.json, <obs>.png, <obs>_breakdown.png: ensembles/aggregate.hpp),
// D/tasks/<id>/history.json, and D/warmstart/ (PNG and JSON files of `foldfarm study warmstart
// --out D/warmstart`).
//
// The inputs are read under the campaign's outputs lock, shared (jobs::readCampaignOutputs):
// while they are read, no aggregation replaces D/aggregate and no `campaign extend` or
// `accept-inputs` moves it aside; one that holds the lock refuses the report in one line that
// names it (and is refused, naming the report, while the report reads).
//
// Everything is read and rendered before the page is written (atomically): bad input
// (D not a campaign directory, an unreadable summary.json or bands.h5) throws InputError
// and writes nothing.
#include <string>
#include <vector>

namespace foldfarm::report {

struct ReportOptions {
  std::string out;            // "" = D/report.html
  std::string aggregate_dir;  // "" = D/aggregate
  std::string warmstart_dir;  // "" = D/warmstart
  // "" = none; else an aggregation directory (or a campaign directory, meaning its
  // aggregate/) of a baseline unfolding of the same data, e.g. the observable-level MultiFold
  // ("classifier": "mlp"): the Δ table shows its Δ and recovered shift beside this one's.
  std::string baseline_dir;
};

struct ReportResult {
  std::string path;  // the page written
  size_t bytes = 0;
  int images = 0;                     // <img> elements embedded
  std::vector<std::string> sections;  // ids of the sections with content
  std::vector<std::string> omitted;   // "<id>: why" of the sections omitted
};

// Throws InputError (exit 2) for bad input, Error for failures (gnuplot crashing, a write).
ReportResult writeCampaignReport(const std::string& campaign_dir, const ReportOptions& options);

// The page as a string (what writeCampaignReport writes).
std::string renderCampaignReport(const std::string& campaign_dir, const ReportOptions& options,
                                 ReportResult* result = nullptr);

}  // namespace foldfarm::report
