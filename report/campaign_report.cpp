#include "report/campaign_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/fd.hpp"
#include "core/base/json_file.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"
#include "core/base/progress.hpp"
#include "core/base/text.hpp"
#include "core/build_info/build_info.hpp"
#include "core/data/histogram.hpp"
#include "core/data/observables.hpp"
#include "core/plot/gnuplot.hpp"
#include "ensembles/aggregate.hpp"
#include "jobs/campaign.hpp"
#include "report/bands_file.hpp"
#include "report/campaign_stats.hpp"
#include "report/html.hpp"
#include "report/weight_diagnostics.hpp"

namespace foldfarm::report {

using namespace foldfarm::plot;
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool isFile(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// OmniLearn's published Δ x10^3 on the Z+jets unfolding benchmark (Pythia simulation
// unfolded to Herwig pseudo-data; the OmniLearn paper), shown for orientation.
std::string paperDelta(const std::string& obs) {
  static const std::map<std::string, std::string> kPaper = {
      {"mass", "2.6"},   {"multiplicity", "0.34"}, {"width", "0.07"},
      {"lnrho", "0.14"}, {"tau21", "0.05"},        {"zg", "0.21"}};
  auto it = kPaper.find(obs);
  return it == kPaper.end() ? "-" : it->second;
}

double jsonNumber(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

json readSummary(const std::string& path) {
  const json j = readJsonFile(path, "rerun the aggregation (`foldfarm aggregate`)");
  if (!j.is_object() || !j.contains("observables") || !j["observables"].is_object())
    throw InputError(path +
                     ": no \"observables\" object; not an aggregation summary (rerun the "
                     "aggregation)");
  for (auto it = j["observables"].begin(); it != j["observables"].end(); ++it) {
    if (!it->is_object())
      throw InputError(path + ": observables." + it.key() + " is not an object");
    for (const char* k : {"delta_prior", "delta_unfolded", "delta_unfolded_err", "coverage_68",
                          "coverage_95", "delta_floor", "shift_recovered", "shift_significance",
                          "coverage_68_total", "coverage_95_total"}) {
      auto f = it->find(k);
      if (f != it->end() && !f->is_null() && !f->is_number())
        throw InputError(path + ": observables." + it.key() + "." + k + " is not a number");
    }
    auto u = it->find("uncertainty");
    if (u != it->end() && !u->is_null()) {
      if (!u->is_object())
        throw InputError(path + ": observables." + it.key() + ".uncertainty is not an object");
      for (auto e = u->begin(); e != u->end(); ++e)
        if (!e->is_null() && !e->is_number())
          throw InputError(path + ": observables." + it.key() + ".uncertainty." + e.key() +
                           " is not a number");
    }
  }
  return j;
}

std::string shortNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.5g", v);
  return buf;
}

std::string timeText(double epoch_s) {
  return epoch_s <= 0 ? "-" : formatUtcTime(epoch_s);
}

std::vector<std::string> pngFilesIn(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".png" && e.is_regular_file(ec)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> jsonFilesIn(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".json" && e.is_regular_file(ec)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Validation-loss curves in a warm-start study's JSON (ensembles/studies.hpp writes
// warmstart.json with "val_loss_warm" and "val_loss_scratch", one value per epoch).
std::vector<Series> warmstartCurves(const json& j) {
  std::vector<Series> out;
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key().rfind("val_loss_", 0) != 0 || !it->is_array()) continue;
    Series s;
    s.label = it.key().substr(9) == "warm"      ? "warm start (foundation)"
              : it.key().substr(9) == "scratch" ? "from scratch"
                                                : it.key().substr(9);
    for (size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_number()) continue;
      s.x.push_back(static_cast<double>(i + 1));
      s.y.push_back((*it)[i].get<double>());
    }
    if (!s.y.empty()) out.push_back(std::move(s));
  }
  return out;
}

// The rows of the uncertainty table: stat and mc_stat first, the sources by name, then
// non_closure and the total.
std::vector<std::string> uncertaintyOrder(const json& observables) {
  std::set<std::string> names;
  for (const auto& o : observables)
    if (o.is_object() && o.contains("uncertainty") && o["uncertainty"].is_object())
      for (auto e = o["uncertainty"].begin(); e != o["uncertainty"].end(); ++e)
        names.insert(e.key());
  std::vector<std::string> order;
  for (const char* first : {"stat", "mc_stat"})
    if (names.erase(first)) order.push_back(first);
  const bool closure = names.erase("non_closure") > 0, total = names.erase("total") > 0;
  order.insert(order.end(), names.begin(), names.end());
  if (closure) order.push_back("non_closure");
  if (total) order.push_back("total");
  return order;
}

const char* kCss = R"css(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1150px;
  padding:0 18px 40px;color:#1b1b1b;background:#fff}
header{border-bottom:3px solid #08519c;margin-bottom:10px}
h1{font-size:1.6em;margin:18px 0 4px}h2{font-size:1.25em;border-bottom:1px solid #ccc;
  padding-bottom:3px;margin-top:28px}h3{font-size:1.05em;margin:16px 0 6px}
.meta{color:#555;font-size:.9em;margin:4px 0 10px}
nav a{margin-right:12px;font-size:.92em;color:#08519c}
table{border-collapse:collapse;margin:6px 0 12px;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 9px;text-align:right}
th{background:#eef3f8}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:4px;display:inline-block}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#444;text-align:center}
.grid figure img{width:540px}.heat figure img{width:360px}
.note{color:#8a5a00;background:#fff7e6;border-left:4px solid #f0a020;padding:4px 10px}
.ok{color:#116611}.bad{color:#aa1111}
)css";

// Everything the page shows, read before anything is rendered (errors here leave nothing
// written).
struct ReportInputs {
  std::string dir, agg, warm;  // the campaign, its aggregation and its warm-start study
  CampaignStats stats;
  std::optional<json> summary;   // agg/summary.json
  std::optional<json> baseline;  // the baseline's summary.json
  std::string baseline_name;
  std::optional<BandsFile> bands;  // agg/bands.h5
  WeightDiagnostics weights;
  std::map<std::string, std::string> agg_png;        // observable -> PNG of the aggregation
  std::map<std::string, std::string> breakdown_png;  // observable -> <obs>_breakdown.png
  std::map<std::string, std::string> shifts_png;     // observable -> <obs>_shifts.png
  std::vector<std::string> warm_png;
  std::vector<std::pair<std::string, json>> warm_json;
  std::vector<std::string> observables;  // bands.h5's order, then the summary's other names
};

// The PNG at `path` when there is a file (InputError when it is not a PNG).
std::optional<std::string> readPngIfPresent(const std::string& path) {
  if (!isFile(path)) return std::nullopt;
  std::string bytes = readFile(path);
  if (!isPng(bytes)) throw InputError(path + ": not a PNG image; rerun the aggregation");
  return bytes;
}

ReportInputs readReportInputs(const std::string& campaign_dir, const ReportOptions& opt) {
  ReportInputs in;
  in.dir = campaign_dir;
  while (in.dir.size() > 1 && in.dir.back() == '/') in.dir.pop_back();
  const std::string& dir = in.dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw InputError(dir +
                     ": not a directory; pass a campaign directory (created by `foldfarm "
                     "campaign init SPEC --dir D`)");
  if (!isFile(dir + "/spec.json") || !isFile(dir + "/journal.sqlite"))
    throw InputError(dir +
                     ": not a campaign directory (no spec.json and journal.sqlite); pass "
                     "the directory given to `foldfarm campaign init --dir`");
  in.agg = opt.aggregate_dir.empty() ? dir + "/aggregate" : opt.aggregate_dir;
  in.warm = opt.warmstart_dir.empty() ? dir + "/warmstart" : opt.warmstart_dir;
  // Read under the campaign's outputs lock, shared: no aggregation replaces D/aggregate file by
  // file, and no extend or accept-inputs moves it or the tasks aside, while the page's inputs
  // are read (a page of one moment, not bands of one aggregation beside a summary of another).
  const Fd outputs = jobs::readCampaignOutputs(dir, "`foldfarm report`");
  logInfo("report: reading {}", dir);
  in.stats = readCampaignStats(dir);
  // An aggregation killed while it renamed its outputs left its commit record
  // (ensembles/aggregate.cpp): the files are of two aggregations until the next one finishes it.
  if (isFile(in.agg + "/" + jobs::kAggregateCommitRecord))
    throw InputError(in.agg +
                     ": an aggregation was killed while it renamed its outputs into "
                     "place, so they are of two aggregations; `foldfarm campaign aggregate " +
                     shellWord(dir) + "` finishes it, then run the report again");
  if (isFile(in.agg + "/summary.json")) in.summary = readSummary(in.agg + "/summary.json");
  if (!opt.baseline_dir.empty()) {
    std::string b = opt.baseline_dir;
    if (!fs::is_directory(b, ec))
      throw InputError(opt.baseline_dir +
                       ": no such directory; pass the baseline campaign's directory (or its "
                       "aggregate/)");
    if (!isFile(b + "/summary.json") && isFile(b + "/aggregate/summary.json")) b += "/aggregate";
    if (!isFile(b + "/summary.json"))
      throw InputError(opt.baseline_dir +
                       ": no summary.json (nor aggregate/summary.json); "
                       "aggregate the baseline campaign first (`foldfarm campaign aggregate`)");
    // A baseline campaign's aggregation is read under its lock too.
    const std::string baseline_campaign = fs::path(b).parent_path().string();
    Fd baseline_outputs;
    if (fs::path(b).filename() == "aggregate" && isFile(baseline_campaign + "/spec.json") &&
        isFile(baseline_campaign + "/journal.sqlite") &&
        !fs::equivalent(baseline_campaign, dir, ec))
      baseline_outputs = jobs::readCampaignOutputs(baseline_campaign, "`foldfarm report`");
    in.baseline = readSummary(b + "/summary.json");
    in.baseline_name = opt.baseline_dir;
  }
  if (isFile(in.agg + "/bands.h5")) in.bands = readBandsFile(in.agg + "/bands.h5");
  in.weights = readWeightDiagnostics(dir);
  if (in.bands)
    for (const auto& o : in.bands->observables)
      if (auto png = readPngIfPresent(in.agg + "/" + o.name + ".png"))
        in.agg_png[o.name] = std::move(*png);
  if (in.summary)
    for (auto it = (*in.summary)["observables"].begin(); it != (*in.summary)["observables"].end();
         ++it) {
      if (auto png = readPngIfPresent(in.agg + "/" + it.key() + "_breakdown.png"))
        in.breakdown_png[it.key()] = std::move(*png);
      if (auto png = readPngIfPresent(in.agg + "/" + it.key() + "_shifts.png"))
        in.shifts_png[it.key()] = std::move(*png);
    }
  in.warm_png = pngFilesIn(in.warm);
  for (const auto& f : jsonFilesIn(in.warm)) {
    in.warm_json.emplace_back(f, readJsonFile(f, "rerun the study"));
  }
  if (in.bands)
    for (const auto& o : in.bands->observables) in.observables.push_back(o.name);
  if (in.summary)
    for (auto it = (*in.summary)["observables"].begin(); it != (*in.summary)["observables"].end();
         ++it)
      if (std::find(in.observables.begin(), in.observables.end(), it.key()) == in.observables.end())
        in.observables.push_back(it.key());
  return in;
}

// The figures this page renders itself, in one gnuplot run (none without gnuplot): band_<obs>
// where the aggregation drew none, corr_<obs>, throughput, warmstart (without the study's PNGs).
std::map<std::string, std::string> renderFigures(const ReportInputs& in) {
  GnuplotBatch batch;
  if (in.bands) {
    for (const auto& o : in.bands->observables) {
      // The bands over band_replicas, the total band and the truth's error (report/bands_file.hpp).
      if (!in.agg_png.count(o.name)) batch.add("band_" + o.name, bandFigure(*in.bands, o));
      // Bins without variance drawn grey (undefined), not white (uncorrelated).
      batch.add("corr_" + o.name, correlationFigure(*in.bands, o));
    }
  }
  const CampaignStats& stats = in.stats;
  if (!stats.done_at.empty()) {
    const double span = std::max(stats.last_end, stats.done_at.back()) - stats.first_start;
    const double unit = span < 180 ? 1.0 : span < 3 * 3600 ? 60.0 : 3600.0;
    const char* uname = unit == 1.0 ? "s" : unit == 60.0 ? "min" : "h";
    Series done{"completed tasks", {0.0}, {0.0}, "steps"};
    for (size_t i = 0; i < stats.done_at.size(); ++i) {
      done.x.push_back((stats.done_at[i] - stats.first_start) / unit);
      done.y.push_back(static_cast<double>(i + 1));
    }
    LineFigure lf;
    // A task run again after it was done (retry --task, accept-inputs) completes twice: its
    // runs are counted, and said so (before: "35 of 29").
    lf.title = stats.runs_again > 0
                   ? "Completed task runs against time (" + std::to_string(stats.done_at.size()) +
                         " runs of " + std::to_string(stats.tasks) + " tasks; " +
                         std::to_string(stats.runs_again) + " ran again after they were done)"
                   : "Completed tasks against time (" + std::to_string(stats.done_at.size()) +
                         " of " + std::to_string(stats.tasks) + ")";
    lf.xlabel = std::string("time since the first dispatch [") + uname + "]";
    lf.ylabel = stats.runs_again > 0 ? "task runs completed" : "tasks completed";
    lf.series.push_back(done);
    batch.add("throughput", lf);
  }
  if (in.warm_png.empty()) {
    std::vector<Series> curves;
    for (const auto& [f, j] : in.warm_json)
      for (auto& s : warmstartCurves(j)) curves.push_back(std::move(s));
    if (!curves.empty()) {
      LineFigure lf;
      lf.title = "Warm start: validation loss per epoch";
      lf.xlabel = "epoch";
      lf.integer_x = true;
      lf.ylabel = "validation loss";
      lf.series = curves;
      batch.add("warmstart", lf);
    }
  }
  if (batch.empty()) return {};
  logInfo("report: rendering figures with gnuplot");
  return batch.render();
}

// Why a figure is left out without gnuplot: not installed, or on PATH but failing its check
// (before: "not installed" for a gnuplot that crashed or timed out on a loaded node).
std::string noGnuplotReason() {
  if (!programAvailable("gnuplot")) return "gnuplot is not installed (apt-get install gnuplot-nox)";
  return "the gnuplot on PATH fails `gnuplot -e 'set terminal pngcairo'` (a crash, a time-out "
         "or no pngcairo terminal); mend it (apt-get install gnuplot-nox) and run the report again";
}

// The page as its sections are added: a section with content is linked from the navigation,
// an omitted one leaves a note in its place.
class Page {
 public:
  void present(const std::string& id, const std::string& title) {
    result_.sections.push_back(id);
    nav_ += "<a href=\"#" + id + "\">" + htmlEscape(title) + "</a>";
  }
  void omit(const std::string& id, const std::string& title, const std::string& why) {
    result_.omitted.push_back(id + ": " + why);
    body_ += htmlOmittedSection(id, title, why);
  }
  // An embedded PNG (counted).
  std::string figure(const std::string& png, const std::string& caption, const std::string& what) {
    ++result_.images;
    return htmlPngFigure(png, caption, what);
  }
  void add(const std::string& html) { body_ += html; }
  // The whole document; `bytes` of the result set to its size.
  std::string finish(const CampaignStats& stats, const std::string& dir) {
    std::string page =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>foldfarm report: " +
        htmlEscape(stats.name) + "</title>\n<style>" + kCss +
        "</style></head>\n<body>\n<header><h1>Campaign " + htmlEscape(stats.name) +
        "</h1>\n<p class=\"meta\">" + htmlEscape(dir) + " &middot; generated " +
        htmlEscape(timeText(jobs::wallClockNow())) + " by " +
        htmlEscape(buildLine(buildInfoJson())) + "</p>\n<nav>" + nav_ + "</nav></header>\n" +
        body_ + "</body></html>\n";
    result_.bytes = page.size();
    return page;
  }
  const ReportResult& result() const { return result_; }

 private:
  ReportResult result_;
  std::string nav_, body_;
};

// What the statistical band of `replicas` is over (`band_replicas` of them: bands.h5 and
// summary.json "band_replicas"): one replica (no band), every replica with replica 0 (fewer than
// two bootstrap replicas ran), or the bootstrap replicas.
enum class BandOf { kOneReplica, kReplica0Included, kBootstrap };
BandOf bandOf(int64_t band_replicas, int64_t replicas) {
  if (replicas <= 1) return BandOf::kOneReplica;
  return band_replicas >= replicas ? BandOf::kReplica0Included : BandOf::kBootstrap;
}

void overviewSection(Page& page, const ReportInputs& in) {
  const CampaignStats& stats = in.stats;
  page.present("overview", "Overview");
  const double wall = stats.last_end > stats.first_start ? stats.last_end - stats.first_start : 0;
  const int done = stats.counts.at("done");
  std::vector<std::vector<std::string>> rows = {
      {"task kind", stats.kind},
      {"tasks (replicas x members)", std::to_string(stats.tasks) + " (" +
                                         std::to_string(stats.replicas) + " x " +
                                         std::to_string(stats.members) + ")"},
      {"executor", stats.executor},
      // The spec's; a run may have used other slots (--slots, a pilot's ranks, arrays).
      {"resources", (stats.gpus > 0 ? std::to_string(stats.gpus) + " GPU(s) x " +
                                          std::to_string(stats.tasks_per_gpu) + " task(s) each"
                                    : std::to_string(stats.slots) + " CPU slot(s)") +
                        " in the spec; " +
                        (stats.attempts > 0 ? "at most " + std::to_string(stats.peak_running) +
                                                  " task(s) ran at once"
                                            : "nothing ran yet")},
      {"threads per task", std::to_string(stats.threads_per_task)},
      {"tasks done", std::to_string(done) + " of " + std::to_string(stats.tasks)},
      {"first dispatch", timeText(stats.first_start)},
      {"last completion", timeText(stats.last_end)},
      {"wall time", wall > 0 ? formatDuration(wall) : "-"},
  };
  if (in.summary) {
    const json& summary = *in.summary;
    rows.push_back({"replicas aggregated", summary.value("replicas", json()).dump()});
    if (summary.contains("band_replicas")) {
      const BandOf of =
          bandOf(summary.value("band_replicas", int64_t{0}), summary.value("replicas", int64_t{0}));
      rows.push_back({"replicas in the statistical band",
                      summary["band_replicas"].dump() +
                          (of == BandOf::kOneReplica ? " (one replica: no statistical band)"
                           : of == BandOf::kReplica0Included
                               ? " (replica 0, the data as measured, among them: fewer than two "
                                 "bootstrap replicas ran)"
                               : " bootstrap replicas")});
    }
    // Bands of fewer chains than are done now (an aggregation run while the campaign ran) say
    // so, beside the count.
    // The nominal's, each variation's and the warm reference's chains, and those done that it
    // left out on purpose (a source of which one side had none).
    int64_t aggregated = summary.value("chains", int64_t{0});
    for (const auto& v : summary.value("variations", json::array()))
      aggregated += v.value("chains", int64_t{0});
    if (summary.contains("warm_reference") && summary["warm_reference"].is_object())
      aggregated += summary["warm_reference"].value("chains", int64_t{0});
    const json incomplete = summary.value("incomplete", json());
    if (incomplete.is_object()) aggregated += incomplete.value("chains_left_out", int64_t{0});
    if (incomplete.is_object()) {
      std::string what;
      // Held by name: items() of a temporary would outlive it.
      const json sources = incomplete.value("sources_left_out", json::object());
      const json variations = incomplete.value("variations", json::object());
      for (const auto& [source, side] : sources.items())
        what += (what.empty() ? "" : "; ") + std::string("source ") + source + " left out (its " +
                (side.is_string() ? side.get<std::string>() : side.dump()) + " had no done chain)";
      for (const auto& [name, c] : variations.items())
        what += (what.empty() ? "" : "; ") + name + ": " + c.value("done", json()).dump() + " of " +
                c.value("tasks", json()).dump() + " chains done";
      if (!what.empty()) rows.push_back({"aggregated before every task was done", what});
    }
    rows.push_back(
        {"chains aggregated",
         summary.value("chains", json()).dump() +
             (aggregated != done ? "; the aggregation read " + std::to_string(aggregated) +
                                       " chain(s) in all, and " + std::to_string(done) +
                                       " tasks are done now: aggregate again for bands of them all"
                                 : std::string())});
    // Which builds made the bands and the chains (summary.json "build", "chain_builds"): what a
    // publication cites.
    if (const json build = summary.value("build", json()); build.is_object())
      rows.push_back({"aggregated by", buildLine(build)});
    if (const json builds = summary.value("chain_builds", json()); builds.is_array()) {
      std::string text;
      for (const json& b : builds) {
        const json build = b.value("build", json());
        text += (text.empty() ? "" : "; ") +
                (build.is_object() ? buildLine(build) : std::string("no build recorded")) + " (" +
                b.value("chains", json()).dump() + " chain(s))";
      }
      if (!text.empty()) rows.push_back({"chains finished by", text});
    }
    // The files the bands were computed from, with their checksums (summary.json "inputs").
    const auto inputRows = [&](const json& roles, const std::string& prefix) {
      if (!roles.is_object()) return;
      for (auto it = roles.begin(); it != roles.end(); ++it) {
        const json& e = it.value();
        std::string text = e.value("path", std::string("?"));
        if (e.contains("files"))
          text +=
              " (" + e["files"].dump() + " files, " + e.value("bytes", json()).dump() + " bytes)";
        else if (e.contains("size"))
          text += " (" + e["size"].dump() + " bytes)";
        const json sum = e.value("sha256", json());
        text += sum.is_string() ? ", sha256 " + sum.get<std::string>() : ", no checksum recorded";
        rows.push_back({"input " + prefix + it.key(), text});
      }
    };
    if (summary.contains("inputs") && summary["inputs"].is_object()) {
      inputRows(summary["inputs"].value("nominal", json()), "");
      const json variations = summary["inputs"].value("variations", json());
      if (variations.is_object())
        for (auto v = variations.begin(); v != variations.end(); ++v)
          inputRows(v.value(), v.key() + ".");
    }
  }
  page.add("<section id=\"overview\"><h2>Overview</h2>\n" +
           htmlTable({"", "value"}, rows, "overview-table") + "</section>\n");
}

// "run `foldfarm campaign aggregate D`", with --truth when the spec names none.
std::string aggregateHint(const ReportInputs& in) {
  return "run `foldfarm campaign aggregate " + shellWord(in.dir) +
         (in.stats.spec_truth ? std::string("`") : std::string(" --truth TRUTH.h5`"));
}

void distributionsSection(Page& page, const ReportInputs& in,
                          const std::map<std::string, std::string>& figures) {
  if (!in.bands) {
    page.omit("distributions", "Unfolded distributions",
              "no " + in.agg + "/bands.h5 (" + aggregateHint(in) + ")");
    return;
  }
  const BandsFile& bands = *in.bands;
  std::string s =
      "<section id=\"distributions\"><h2>Unfolded distributions</h2>\n<p>Unit-area "
      "densities: the mean over " +
      std::to_string(bands.replicas) + " replicas (" + std::to_string(bands.chains) +
      " chains) with the 16-84% and 2.5-97.5% bands of " + std::to_string(bands.band_replicas) +
      // With fewer than two bootstrap replicas the band is over every replica, replica 0 (the
      // data as measured) included, and says so.
      (bandOf(bands.band_replicas, bands.replicas) == BandOf::kOneReplica
           ? " replica (one replica: the bands have no width)"
       : bandOf(bands.band_replicas, bands.replicas) == BandOf::kReplica0Included
           ? " replicas (replica 0, the data as measured, among them: fewer than two bootstrap "
             "replicas ran)"
           : " bootstrap replicas") +
      ", the truth and the prior (MC gen); the lower panels show "
      "ratios.</p>\n<div class=\"grid\">\n";
  int shown = 0;
  std::vector<std::string> missing;
  for (const auto& o : bands.observables) {
    if (in.agg_png.count(o.name)) {
      s += page.figure(in.agg_png.at(o.name), o.name + " (aggregation figure)",
                       in.agg + "/" + o.name + ".png");
      ++shown;
    } else if (figures.count("band_" + o.name)) {
      s += page.figure(figures.at("band_" + o.name), o.name, "figure " + o.name);
      ++shown;
    } else {
      missing.push_back(o.name);
    }
  }
  s += "</div>\n";
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    s += "<p class=\"note\">Not drawn (" + htmlEscape(names) +
         "): " + htmlEscape(noGnuplotReason()) + "</p>\n";
  }
  s += "</section>\n";
  if (shown > 0) page.present("distributions", "Distributions");
  page.add(s);
}

void uncertaintySection(Page& page, const ReportInputs& in) {
  const std::vector<std::string> sources =
      in.summary ? uncertaintyOrder((*in.summary)["observables"]) : std::vector<std::string>();
  if (!in.summary) {
    page.omit("uncertainties", "Uncertainty breakdown",
              "no " + in.agg + "/summary.json (run `foldfarm campaign aggregate " +
                  shellWord(in.dir) + "`)");
    return;
  }
  if (sources.empty()) {
    page.omit("uncertainties", "Uncertainty breakdown",
              in.agg +
                  "/summary.json has no uncertainty breakdown (aggregated by an older foldfarm); "
                  "rerun `foldfarm campaign aggregate " +
                  shellWord(in.dir) + "`");
    return;
  }
  const json& summary = *in.summary;
  const json& observables = summary["observables"];
  page.present("uncertainties", "Uncertainties");
  std::vector<std::string> header = {"uncertainty"};
  std::vector<std::string> shown_obs;
  for (const auto& name : in.observables)
    if (observables.contains(name) && observables[name].contains("uncertainty")) {
      header.push_back(name);
      shown_obs.push_back(name);
    }
  std::vector<std::vector<std::string>> rows;
  bool training_above_stat = false;
  for (const auto& src : sources) {
    std::vector<std::string> row = {src};
    for (const auto& name : shown_obs) {
      const json& o = observables[name];
      const double v = jsonNumber(o["uncertainty"], src.c_str());
      // A source's shift beside its own noise, where the aggregation could estimate it.
      const double e =
          o.contains("shift_error") ? jsonNumber(o["shift_error"], src.c_str()) : std::nan("");
      row.push_back(std::isnan(v)   ? "-"
                    : std::isnan(e) ? fmt(100 * v, 1) + "%"
                                    : fmt(100 * v, 1) + "% ± " + fmt(100 * e, 1) + "%");
    }
    rows.push_back(std::move(row));
    if (src != "stat") continue;
    // The part of stat that is the chains' training noise (from their ensemble members).
    std::vector<std::string> training = {"stat: training noise"};
    bool any = false;
    for (const auto& name : shown_obs) {
      const double v = jsonNumber(observables[name], "training_noise");
      const double st = jsonNumber(observables[name]["uncertainty"], "stat");
      any = any || !std::isnan(v);
      // Both are estimates; from few replicas the part can come out above the whole.
      const bool above = !std::isnan(v) && !std::isnan(st) && v > st;
      training_above_stat = training_above_stat || above;
      training.push_back(std::isnan(v) ? "-" : fmt(100 * v, 1) + "%" + (above ? " *" : ""));
    }
    if (any) rows.push_back(std::move(training));
  }
  // The warm start's own effect (the warm reference against the nominal): a diagnostic.
  {
    std::vector<std::string> warm = {"warm start alone (not counted)"};
    bool any = false;
    for (const auto& name : shown_obs) {
      const json& o = observables[name];
      const json w = o.value("warm_start_effect", json::object());
      const double v = w.is_object() ? jsonNumber(w, "shift") : std::nan("");
      const double e = w.is_object() ? jsonNumber(w, "shift_error") : std::nan("");
      any = any || !std::isnan(v);
      warm.push_back(std::isnan(v)   ? "-"
                     : std::isnan(e) ? fmt(100 * v, 1) + "%"
                                     : fmt(100 * v, 1) + "% ± " + fmt(100 * e, 1) + "%");
    }
    const bool total_last = !rows.empty() && rows.back().front() == "total";
    if (any) rows.insert(total_last ? rows.end() - 1 : rows.end(), std::move(warm));
  }
  std::string s =
      "<section id=\"uncertainties\"><h2>Uncertainty breakdown</h2>\n<p>Relative size of "
      "each uncertainty: the root mean square over the bins of σ / unfolded, weighted by the "
      "unfolded distribution, so that it is the uncertainty where the events are, not that of "
      "the emptiest tail bin (√(Σ σ²/unfolded / Σ unfolded) over the bins); σ from the "
      "statistical covariance (stat: data bootstrap; of which training noise: the spread of "
      "the ensemble members of a replica, shown when replicas have two or more), the "
      "MC-statistics covariance (mc_stat: simulation bootstrap, the training noise taken off "
      "where members allow, within the range its replicas span), each systematic source's "
      "symmetrised shift, the non-closure (unfolded pseudo-data minus its truth) and the "
      "total covariance (their sum). A source's ± is the noise of its shift: the training's "
      "(from the differences between its chains and the chains it is measured from, the warm "
      "reference or the nominal, of the same replica and member, where there are two or more; "
      "a pair's half differences up − down), and for a modelling source or the non-closure "
      "the statistics of the independent samples it compares (summary.json "
      "shift_error_parts): a shift not well above it is mostly noise. "
      "Warm-started variations are measured from the warm reference (the nominal trained again "
      "as they were), whose own distance from the nominal is the row \"warm start alone\": "
      "not an uncertainty, and not in the total. " +
      (summary.value("shift_noise", std::string()) == "subtracted"
           ? std::string("Here each source's noise was taken off its covariance (aggregated with "
                         "--shift-noise subtract): its row is what is left of its shift beyond its "
                         "noise.")
           : std::string("Each source counts its whole shift, noise included (aggregate with "
                         "--shift-noise subtract to take the noise off).")) +
      "</p>\n" + htmlTable(header, rows, "uncertainty-table") +
      (training_above_stat
           ? std::string("<p class=\"note\">* The training noise came out above the statistical "
                         "uncertainty it is part of: both are estimated from few replicas and "
                         "members here; more of them narrow both estimates.</p>\n")
           : std::string());
  const json& variations = summary.value("variations", json::array());
  if (variations.is_array() && !variations.empty()) {
    std::vector<std::vector<std::string>> vr;
    for (const auto& v : variations) {
      if (!v.is_object()) continue;
      auto text = [&](const char* k) {
        auto f = v.find(k);
        return f == v.end() ? std::string("-") : f->is_string() ? f->get<std::string>() : f->dump();
      };
      const std::string direction = text("direction");
      // "3 (1 in its shift)" where a shift from the reference is over fewer chains.
      std::string chains = text("chains");
      if (v.contains("chains_in_shift") && v["chains_in_shift"] != v.value("chains", json()))
        chains += " (" + text("chains_in_shift") + " in its shift)";
      vr.push_back({text("name"), text("type"), text("source"),
                    direction.empty() ? "one-sided" : direction, chains, text("replicas"),
                    text("shift_from")});
    }
    s += "<h3>Variations</h3>\n" +
         htmlTable({"variation", "type", "source", "direction", "chains", "replicas", "shift from"},
                   vr, "variations-table");
  }
  std::string figs;
  for (const auto& name : in.observables) {
    if (in.breakdown_png.count(name))
      figs += page.figure(in.breakdown_png.at(name), name + ": relative uncertainty per bin",
                          in.agg + "/" + name + "_breakdown.png");
    // Beside it, each source's signed shift (the sign the breakdown's sizes do not show).
    if (in.shifts_png.count(name))
      figs += page.figure(in.shifts_png.at(name), name + ": the shift of each variation",
                          in.agg + "/" + name + "_shifts.png");
  }
  if (!figs.empty())
    s += "<div class=\"grid\">\n" + figs + "</div>\n";
  else
    s += "<p class=\"note\">No breakdown figures in " + htmlEscape(in.agg) +
         " (the aggregation draws &lt;observable&gt;_breakdown.png when gnuplot is "
         "installed).</p>\n";
  page.add(s + "</section>\n");
}

// A recovered fraction of the shift of the mean; in brackets when the shift is within ~2
// standard errors (noise: its fraction means nothing).
std::string shiftCell(double f, double z) {
  if (std::isnan(f)) return std::string("-");
  std::string c = fmt(100 * f, 0) + "%";
  if (!std::isnan(z) && z < 2) c = "(" + c + ", shift " + fmt(z, 1) + "σ)";
  return c;
}

// A Δ x10^3 (or a difference of two) ± its error: one decimal, as many more as an error below
// 0.1 needs to show its first digit (at most three), so that no error reads 0.0; the value to
// the same decimals. `sign`: a + before a positive value. "-" for a NaN value; no ± for a
// NaN error.
std::string deltaCell(double v, double e, bool sign = false) {
  if (std::isnan(v)) return "-";
  int decimals = 1;
  if (e > 0 && e < 0.095) decimals = std::min(3, static_cast<int>(-std::floor(std::log10(e))));
  std::string c = (sign && v >= 0 ? "+" : "") + fmt(v, decimals);
  if (!std::isnan(e)) c += " ± " + fmt(e, decimals);
  return c;
}

// "lnrho: unfolded 1.3% below, prior 1.4% below, truth 1.2% below; " for an observable's
// summary.json outside_binning where a share reaches 0.1%, else "". `known`: set when any
// share is given.
std::string outsideText(const std::string& name, const json& outside, bool* known) {
  if (!outside.is_object()) return "";
  std::string parts;
  bool notable = false;
  for (const char* what : {"unfolded", "prior", "truth"}) {
    const json s = outside.value(what, json());
    if (!s.is_object()) continue;
    *known = true;
    std::string shares;
    for (const char* side : {"below", "above"}) {
      const double f = jsonNumber(s, side);
      if (std::isnan(f) || f < 5e-4) continue;
      notable = notable || f >= 1e-3;
      shares += (shares.empty() ? " " : " and ") + fmt(100 * f, 1) + "% " + side;
    }
    if (!shares.empty()) parts += (parts.empty() ? "" : ", ") + std::string(what) + shares;
  }
  return notable ? htmlEscape(name) + ": " + parts + "; " : "";
}

// An aggregation rebinned from the chains' weights (`aggregate --binning`) names the observables
// it rebinned; "" for one of the chains' own histograms.
std::string rebinnedNote(const json& summary) {
  const json r = summary.value("rebinned", json());
  if (!r.is_array() || r.empty()) return "";
  std::string names;
  for (const json& n : r)
    if (n.is_string()) names += (names.empty() ? "" : ", ") + htmlEscape(n.get<std::string>());
  return "<p>Rebinned from the chains' per-event weights (<code>aggregate --binning</code>), "
         "not the binning they ran with: " +
         names + ".</p>\n";
}

void deltaSection(Page& page, const ReportInputs& in) {
  if (!in.summary) {
    page.omit("delta", "Triangular discriminator and coverage",
              "no " + in.agg + "/summary.json (" + aggregateHint(in) + ")");
    return;
  }
  const json& observables = (*in.summary)["observables"];
  std::vector<std::vector<std::string>> rows;
  bool any_truth = false, any_total = false, any_iterations = false;
  std::vector<std::string> by_iteration;  // per row: Δ after each iteration
  std::string outside_note;               // the observables with a share outside the binning
  bool any_outside_known = false;
  bool other_binning = false;  // the baseline bins an observable otherwise
  // This campaign less the baseline, replica by replica, where they share seed and data.
  const json paired =
      in.baseline ? ensembles::pairReplicas(*in.baseline, *in.summary, "the baseline") : json();
  for (const auto& name : in.observables) {
    if (!observables.contains(name)) continue;
    const json& o = observables[name];
    const double dp = jsonNumber(o, "delta_prior"), du = jsonNumber(o, "delta_unfolded");
    const double de = jsonNumber(o, "delta_unfolded_err");
    const double c68 = jsonNumber(o, "coverage_68"), c95 = jsonNumber(o, "coverage_95");
    const double c68_total = jsonNumber(o, "coverage_68_total");
    const double floor = jsonNumber(o, "delta_floor"), shift = jsonNumber(o, "shift_recovered");
    const double signif = jsonNumber(o, "shift_significance");
    if (!std::isnan(du)) any_truth = true;
    // Told apart: a prior already at the floor has nothing to unfold; an unfolded Δ at the
    // floor is as good as these sample sizes allow.
    // One decimal: Δ's error is about 1 (before: "19.604 ± 1.927").
    std::string prior_cell = fmt(dp, 1);
    if (!std::isnan(dp) && !std::isnan(floor) && dp <= floor) prior_cell += " (at floor)";
    // Below the floor too: a truth that is the gen level of the events unfolded shares their
    // fluctuations (the caption says so).
    std::string unfolded_cell = deltaCell(du, de);
    if (!std::isnan(du) && !std::isnan(floor) && du <= floor)
      unfolded_cell += " (at or below floor)";
    std::vector<std::string> row = {name, prior_cell, unfolded_cell, fmt(floor, 1),
                                    shiftCell(shift, signif)};
    if (in.baseline) {
      const json bo = (*in.baseline)["observables"].value(name, json::object());
      const double bd = jsonNumber(bo, "delta_unfolded"), be = jsonNumber(bo, "delta_unfolded_err");
      const double bs = jsonNumber(bo, "shift_recovered");
      // Δ of two binnings differ by the binning alone: not set side by side.
      if (o.contains("edges") && bo.contains("edges") && o["edges"] != bo["edges"]) {
        row.insert(row.end(), {"- (another binning)", "-", "-"});
        other_binning = true;
      } else {
        row.push_back(deltaCell(bd, be));
        row.push_back(shiftCell(bs, jsonNumber(bo, "shift_significance")));
        const json po = paired.contains("observables")
                            ? paired["observables"].value(name, json::object())
                            : json::object();
        const double pd = jsonNumber(po, "delta_diff"), pe = jsonNumber(po, "delta_diff_err");
        row.push_back(deltaCell(pd, pe, /*sign=*/true));
      }
    }
    row.push_back(std::isnan(dp) || std::isnan(du) ? "-" : fmt(du / std::max(dp, 1e-300), 2));
    row.push_back(std::isnan(c68) ? "-" : fmt(100 * c68, 0) + "%");
    if (!std::isnan(c68_total)) any_total = true;
    row.push_back(std::isnan(c68_total) ? "-" : fmt(100 * c68_total, 0) + "%");
    row.push_back(std::isnan(c95) ? "-" : fmt(100 * c95, 0) + "%");
    // The paper's Δ is of OmniLearn's binning (summaries without edges had no other).
    const int index = data::observableIndex(name);
    const bool omnilearn_binning =
        !o.contains("edges") || (index >= 0 && index < data::kNumSubs &&
                                 o["edges"] == json(data::observableBinning(index).edges));
    row.push_back(omnilearn_binning ? paperDelta(name) : "- (another binning)");
    rows.push_back(std::move(row));
    // Δ after each iteration ("24.1 → 20.3 → 19.6"): still falling at the last, more
    // iterations would move the result.
    std::string steps;
    if (const json it = o.value("delta_by_iteration", json()); it.is_array() && it.size() > 1)
      for (const json& d : it)
        steps += (steps.empty() ? "" : " → ") + (d.is_number() ? fmt(d.get<double>(), 1) : "-");
    any_iterations = any_iterations || !steps.empty();
    by_iteration.push_back(steps.empty() ? "-" : steps);
    outside_note += outsideText(name, o.value("outside_binning", json()), &any_outside_known);
  }
  // After "shift recovered", where the chains kept each iteration's result.
  constexpr size_t kIterationColumn = 5;
  if (any_iterations)
    for (size_t k = 0; k < rows.size(); ++k)
      rows[k].insert(rows[k].begin() + kIterationColumn, by_iteration[k]);
  // Aggregations without the total band (older ones) keep the table they had.
  if (!any_total)
    for (auto& row : rows) row.erase(row.end() - 3);
  std::vector<std::string> header = {"observable", "Δ prior", "Δ unfolded", "Δ floor",
                                     "shift recovered"};
  if (any_iterations) header.push_back("Δ after each iteration");
  if (in.baseline) {
    header.push_back("Δ baseline");
    header.push_back("shift baseline");
    header.push_back("Δ − baseline, paired");
  }
  for (const char* h : {"unfolded / prior", "coverage 68%"}) header.push_back(h);
  if (any_total) header.push_back("coverage 68% (total)");
  for (const char* h : {"coverage 95%", "OmniLearn paper (other samples)"}) header.push_back(h);
  if (!any_truth) {
    page.omit("delta", "Triangular discriminator and coverage",
              in.agg + "/summary.json has no truth comparison (" +
                  (in.stats.spec_truth
                       ? "the spec names a truth: " + aggregateHint(in) + " again"
                       : std::string("aggregate with --truth TRUTH.h5 or a spec input 'truth'")) +
                  ")");
    return;
  }
  page.present("delta", "Δ table");
  page.add(
      "<section id=\"delta\"><h2>Triangular discriminator and coverage</h2>\n<p>Δ x10<sup>3"
      "</sup> against the truth (smaller is closer): the prior (MC gen) before unfolding and "
      "the unfolded result ± its spread over the replicas; the statistical floor = the Δ that "
      "a perfect unfolding of samples of these sizes would still show (from the weights' "
      "Σw² per bin), so a Δ at the floor cannot be improved on these events. When the truth is "
      "the generator level of the same events that are unfolded, the unfolded result and the "
      "truth share their fluctuations, so a Δ below the floor is possible and means no more "
      "than one at the floor (\"at or below floor\"). Δ after each iteration: the unfolded "
      "result's Δ after iterations 1, 2, …; one still falling at the last iteration says that "
      "more iterations would move the result (a bias that no band holds). Shift "
      "recovered = how much of the prior-to-truth shift of the observable's mean the "
      "unfolding recovered (100% = all, 0% = none; in brackets when the prior-to-truth shift "
      "is under 2 standard errors, i.e. noise); coverage = fraction of bins whose "
      "truth lies inside the 68% / 95% band of the replicas (total: within ± 1σ of the "
      "total covariance, systematics included). The last column is OmniLearn's published value "
      "on the Z+jets benchmark (Pythia unfolded to Herwig pseudo-data), for orientation "
      "only: its samples are far larger, so its floor is far lower, and it is no target for "
      "the events here (compare a Δ with this table's floor).</p>\n" +
      (in.baseline
           ? "<p>Baseline (same data, another unfolding): " + htmlEscape(in.baseline_name) + " (" +
                 htmlEscape(in.baseline->value("classifier", std::string("see its spec"))) +
                 "). Δ − baseline, paired: each bootstrap replica's Δ less the baseline's "
                 "replica of the same number, mean ± standard error; the two campaigns' "
                 "replicas drew the same data weights (one campaign seed and data file), so "
                 "this difference is free of the data's fluctuation that both spreads share" +
                 (other_binning ? std::string("; \"another binning\": the baseline bins the "
                                              "observable otherwise, and Δ of two binnings are "
                                              "not comparable")
                                : std::string()) +
                 (paired.contains("not_paired")
                      ? " (not paired here: " +
                            htmlEscape(paired["not_paired"].get<std::string>()) + ")"
                      : std::string()) +
                 ".</p>\n"
           : std::string()) +
      htmlTable(header, rows, "delta-table") +
      (!any_outside_known ? std::string()
       : outside_note.empty()
           ? "<p>Outside the binning: under 0.1% of each distribution (unfolded, prior, truth) "
             "of every observable.</p>\n"
           : "<p>Outside the binning (left out of the densities, the figures and Δ; shares of "
             "each distribution's Σw, listed where one reaches 0.1%): " +
                 outside_note.substr(0, outside_note.size() - 2) + ".</p>\n") +
      rebinnedNote(*in.summary) + "</section>\n");
}

void correlationsSection(Page& page, const ReportInputs& in, bool gnuplot,
                         const std::map<std::string, std::string>& figures) {
  if (!in.bands) {
    page.omit("correlations", "Bin-to-bin correlations", "no " + in.agg + "/bands.h5");
    return;
  }
  if (!gnuplot) {
    page.omit("correlations", "Bin-to-bin correlations", noGnuplotReason());
    return;
  }
  page.present("correlations", "Correlations");
  std::string s =
      "<section id=\"correlations\"><h2>Bin-to-bin correlations</h2>\n<p>Correlation of the "
      "unfolded densities over the replicas of the statistical band (blue -1, white 0, red +1; "
      "grey: bins without variance, empty in every replica, whose correlation is "
      "undefined).</p>\n"
      "<div class=\"grid heat\">\n";
  for (const auto& o : in.bands->observables)
    s += page.figure(figures.at("corr_" + o.name), o.name, "correlation " + o.name);
  page.add(s + "</div></section>\n");
}

void weightsSection(Page& page, const ReportInputs& in) {
  const WeightDiagnostics& weights = in.weights;
  if (weights.steps.empty()) {
    page.omit("weights", "Weight diagnostics",
              "no chain history (" + in.dir + "/tasks/<id>/history.json) in this campaign");
    return;
  }
  page.present("weights", "Weights");
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : weights.steps)
    rows.push_back({std::to_string(s.iteration), std::to_string(s.step), std::to_string(s.chains),
                    fmt(100 * s.mean_ess_fraction, 1) + "%",
                    fmt(100 * s.min_ess_fraction, 1) + "% (" + s.min_ess_task + ")",
                    std::isnan(s.mean_factor_ess_fraction)
                        ? std::string("–")
                        : fmt(100 * s.mean_factor_ess_fraction, 1) + "%",
                    std::to_string(s.clipped), std::to_string(s.non_finite), fmt(s.max_weight, 2)});
  std::vector<std::vector<std::string>> worst;
  for (size_t i = 0; i < weights.chains.size() && i < 10; ++i) {
    const auto& c = weights.chains[i];
    worst.push_back({c.task, fmt(100 * c.final_ess_fraction, 1) + "%",
                     fmt(100 * c.min_ess_fraction, 1) + "%", std::to_string(c.clipped),
                     std::to_string(c.non_finite), fmt(c.max_weight, 2)});
  }
  page.add(
      "<section id=\"weights\"><h2>Weight diagnostics</h2>\n<p>Effective sample size "
      "(Σw)²/Σw² of the simulated events' weights (the MC weights included) as a fraction of "
      "the events each step reweights (those passing its reco or gen selection), and "
      "reweighting factors that were clipped or "
      "not finite, per OmniFold iteration and step over " +
      std::to_string(weights.chains.size()) +
      " chains. The ESS of the factors is that of the step's reweighting factors alone: with event "
      "weights of both signs (NLO generators) the ESS of the weights is small from the prior "
      "on, while the factors' says what the unfolding itself costs.</p>\n" +
      htmlTable({"iteration", "step", "chains", "mean ESS", "lowest ESS", "mean ESS of the factors",
                 "clipped", "non-finite", "max weight"},
                rows, "weights-table") +
      "<h3>Chains with the lowest ESS</h3>\n" +
      htmlTable({"task", "final ESS", "lowest ESS", "clipped", "non-finite", "max weight"}, worst,
                "weights-chains") +
      "</section>\n");
}

// The failed tasks (the first 50) and the reasons of every failed attempt.
std::string failuresHtml(const CampaignStats& stats, const std::string& dir) {
  if (stats.failures.empty()) return "<p id=\"no-failures\" class=\"ok\">No task failed.</p>\n";
  std::vector<std::vector<std::string>> fr;
  for (size_t i = 0; i < stats.failures.size() && i < 50; ++i) {
    const auto& f = stats.failures[i];
    fr.push_back({f.task, f.state, std::to_string(f.attempts), std::to_string(f.failures),
                  f.exit_code < 0 ? "-" : std::to_string(f.exit_code), f.reason});
  }
  std::string s =
      htmlTable({"task", "state", "attempts", "failed attempts", "last exit", "last reason"}, fr,
                "failures-table");
  if (stats.failures.size() > 50)
    s += "<p>… and " + std::to_string(stats.failures.size() - 50) +
         " more (`foldfarm campaign status " + htmlEscape(shellWord(dir)) + "`).</p>\n";
  std::vector<std::pair<int, std::string>> reasons;
  for (const auto& [r, n] : stats.failure_reasons) reasons.emplace_back(n, r);
  std::sort(reasons.rbegin(), reasons.rend());
  std::vector<std::vector<std::string>> rr;
  for (const auto& [n, r] : reasons) rr.push_back({r, std::to_string(n)});
  if (!rr.empty())
    s += "<h3>Failure reasons (all attempts)</h3>\n" +
         htmlTable({"reason", "attempts"}, rr, "reasons-table");
  return s;
}

void campaignSection(Page& page, const ReportInputs& in) {
  const CampaignStats& stats = in.stats;
  page.present("campaign", "Campaign");
  std::vector<std::vector<std::string>> states;
  for (const auto& [k, v] : stats.counts) states.push_back({k, std::to_string(v)});
  const double wall = stats.last_end > stats.first_start ? stats.last_end - stats.first_start : 0;
  const double done = static_cast<double>(stats.done_at.size());
  const std::string unit = stats.runs_again > 0 ? " task runs" : " tasks";
  std::vector<std::vector<std::string>> acct = {
      {"attempts (dispatches)", std::to_string(stats.attempts)},
      {"failed attempts", std::to_string(stats.failed_attempts)},
      {"interrupted attempts (requeued)", std::to_string(stats.interrupted_attempts)},
      {"tasks needing more than one attempt", std::to_string(stats.tasks_retried)},
      {"task run time, all attempts", formatDuration(stats.run_s)},
      {"GPU-hours", stats.gpus > 0 ? fmt(stats.gpu_hours, 4) + " (" +
                                         formatDuration(stats.gpu_hours * 3600) + ")"
                                   : "0 (CPU slots)"},
      {"CPU-hours (x threads per task)",
       fmt(stats.cpu_hours, 4) + " (" + formatDuration(stats.cpu_hours * 3600) + ")"},
      // Completions per hour: a task run again after it was done completes twice, so these
      // are task runs then, and said so.
      {"throughput",
       wall > 0 ? fmt(done / wall * 3600.0, 1) + unit + "/h (" + fmt(done / wall, 2) + unit + "/s)"
                : "-"},
      {"mean slots busy", wall > 0 ? fmt(stats.run_s / wall, 2) : "-"},
  };
  if (stats.runs_again > 0)
    acct.insert(acct.begin() + 4, {"runs of tasks done before (retry --task, accept-inputs)",
                                   std::to_string(stats.runs_again)});
  std::string hosts;
  for (const auto& [h, n] : stats.hosts)
    hosts += (hosts.empty() ? "" : ", ") + h + " (" + std::to_string(n) + ")";
  if (!hosts.empty()) acct.push_back({"hosts (attempts)", hosts});
  page.add("<section id=\"campaign\"><h2>Campaign statistics</h2>\n<h3>Tasks per state</h3>\n" +
           htmlTable({"state", "tasks"}, states, "states-table") +
           "<h3>Attempts and "
           "accounting</h3>\n" +
           htmlTable({"", "value"}, acct, "accounting-table") + "<h3>Failures</h3>\n" +
           failuresHtml(stats, in.dir) + "</section>\n");
}

void throughputSection(Page& page, const ReportInputs& in, bool gnuplot,
                       const std::map<std::string, std::string>& figures) {
  if (in.stats.done_at.empty()) {
    page.omit("throughput", "Throughput", "no task has completed yet");
    return;
  }
  if (!gnuplot) {
    page.omit("throughput", "Throughput", noGnuplotReason());
    return;
  }
  page.present("throughput", "Throughput");
  page.add("<section id=\"throughput\"><h2>Throughput</h2>\n" +
           page.figure(figures.at("throughput"), "tasks completed against time (journal)",
                       "throughput") +
           "</section>\n");
}

void warmstartSection(Page& page, const ReportInputs& in,
                      const std::map<std::string, std::string>& figures) {
  std::string s;
  for (const auto& p : in.warm_png)
    s += page.figure(readFile(p), fs::path(p).filename().string(), p);
  if (s.empty() && figures.count("warmstart"))
    s += page.figure(figures.at("warmstart"), "validation loss per epoch", "warm-start curves");
  std::vector<std::vector<std::string>> scalars;
  for (const auto& [f, j] : in.warm_json) {
    if (!j.is_object()) continue;
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it->is_number() || it->is_string() || it->is_boolean() || it->is_null())
        scalars.push_back({it.key(), it->is_string()         ? it->get<std::string>()
                                     : it->is_null()         ? "- (not reached)"
                                     : it->is_number_float() ? shortNumber(it->get<double>())
                                                             : it->dump()});
  }
  if (s.empty() && scalars.empty()) {
    page.omit("warmstart", "Warm start",
              "no warm-start study in " + in.warm + " (run `foldfarm study warmstart --out " +
                  shellWord(in.warm) + "`)");
    return;
  }
  page.present("warmstart", "Warm start");
  std::string html =
      "<section id=\"warmstart\"><h2>Warm start against training from scratch</h2>\n"
      "<div class=\"grid\">" +
      s + "</div>\n";
  if (!scalars.empty()) html += htmlTable({"figure", "value"}, scalars, "warmstart-table");
  page.add(html + "</section>\n");
}

}  // namespace

std::string renderCampaignReport(const std::string& campaign_dir, const ReportOptions& opt,
                                 ReportResult* result) {
  // 1. Read every input (errors here leave nothing written).
  const ReportInputs in = readReportInputs(campaign_dir, opt);
  // 2. Figures this page renders itself, in one gnuplot run.
  const bool gnuplot = gnuplotAvailable();
  const std::map<std::string, std::string> figures =
      gnuplot ? renderFigures(in) : std::map<std::string, std::string>();
  // 3. The page, section by section.
  Page page;
  overviewSection(page, in);
  distributionsSection(page, in, figures);
  uncertaintySection(page, in);
  deltaSection(page, in);
  correlationsSection(page, in, gnuplot, figures);
  weightsSection(page, in);
  campaignSection(page, in);
  throughputSection(page, in, gnuplot, figures);
  warmstartSection(page, in, figures);
  std::string html = page.finish(in.stats, in.dir);
  if (result) *result = page.result();
  return html;
}

ReportResult writeCampaignReport(const std::string& campaign_dir, const ReportOptions& options) {
  std::string dir = campaign_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string out = options.out.empty() ? dir + "/report.html" : options.out;
  // The page replaces only a page: an --out naming the journal, the spec or a result file
  // would lose it. (Without --out, rendering refuses a directory that is no campaign.)
  if (!options.out.empty()) requireOutputDirectory(out);
  const std::string ext = fs::path(out).extension().string();
  if (fs::exists(out) && ext != ".html" && ext != ".htm")
    throw InputError(out +
                     ": exists and is not an HTML page; the report replaces only an earlier "
                     "report (.html): choose another --out");
  ReportResult res;
  const std::string page = renderCampaignReport(campaign_dir, options, &res);
  res.path = out;
  writeFileAtomic(res.path, page);
  logInfo("report: wrote {} ({} KiB, {} figures)", res.path, page.size() / 1024, res.images);
  return res;
}

}  // namespace foldfarm::report
