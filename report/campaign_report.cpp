#include "report/campaign_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/progress.hpp"
#include "core/data/observables.hpp"
#include "core/plot/gnuplot.hpp"
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

// OmniLearn's published Δ x10^3 on real Z+jets data (SPEC §5), shown for orientation.
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
  json j;
  try {
    j = json::parse(readFile(path));
  } catch (const json::exception& e) {
    throw InputError(path + ": not valid JSON (" + std::string(e.what()) +
                     "); rerun the aggregation (`foldfarm aggregate`)");
  }
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
  if (epoch_s <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
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

}  // namespace

std::string renderCampaignReport(const std::string& campaign_dir_in, const ReportOptions& opt,
                                 ReportResult* result) {
  std::string dir = campaign_dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw InputError(dir +
                     ": not a directory; pass a campaign directory (created by `foldfarm "
                     "campaign init SPEC --dir D`)");
  if (!isFile(dir + "/spec.json") || !isFile(dir + "/journal.sqlite"))
    throw InputError(dir +
                     ": not a campaign directory (no spec.json and journal.sqlite); pass "
                     "the directory given to `foldfarm campaign init --dir`");
  const std::string agg = opt.aggregate_dir.empty() ? dir + "/aggregate" : opt.aggregate_dir;
  const std::string warm = opt.warmstart_dir.empty() ? dir + "/warmstart" : opt.warmstart_dir;

  // 1. Read every input (errors here leave nothing written).
  logInfo("report: reading {}", dir);
  const CampaignStats stats = readCampaignStats(dir);
  std::optional<json> summary;
  if (isFile(agg + "/summary.json")) summary = readSummary(agg + "/summary.json");
  std::optional<json> baseline;
  std::string baseline_name;
  if (!opt.baseline_dir.empty()) {
    std::string b = opt.baseline_dir;
    if (!isFile(b + "/summary.json") && isFile(b + "/aggregate/summary.json")) b += "/aggregate";
    if (!isFile(b + "/summary.json"))
      throw InputError(opt.baseline_dir +
                       ": no summary.json (nor aggregate/summary.json); "
                       "aggregate the baseline campaign first (`foldfarm campaign aggregate`)");
    baseline = readSummary(b + "/summary.json");
    baseline_name = opt.baseline_dir;
  }
  std::optional<BandsFile> bands;
  if (isFile(agg + "/bands.h5")) bands = readBandsFile(agg + "/bands.h5");
  const WeightDiagnostics weights = readWeightDiagnostics(dir);
  std::map<std::string, std::string> agg_png;  // observable -> PNG written by the aggregation
  if (bands) {
    for (const auto& o : bands->observables) {
      const std::string p = agg + "/" + o.name + ".png";
      if (!isFile(p)) continue;
      std::string bytes = readFile(p);
      if (!isPng(bytes)) throw InputError(p + ": not a PNG image; rerun the aggregation");
      agg_png[o.name] = std::move(bytes);
    }
  }
  std::map<std::string, std::string> breakdown_png;  // observable -> <obs>_breakdown.png
  if (summary) {
    for (auto it = (*summary)["observables"].begin(); it != (*summary)["observables"].end(); ++it) {
      const std::string p = agg + "/" + it.key() + "_breakdown.png";
      if (!isFile(p)) continue;
      std::string bytes = readFile(p);
      if (!isPng(bytes)) throw InputError(p + ": not a PNG image; rerun the aggregation");
      breakdown_png[it.key()] = std::move(bytes);
    }
  }
  std::vector<std::string> warm_png = pngFilesIn(warm);
  std::vector<std::pair<std::string, json>> warm_json;
  for (const auto& f : jsonFilesIn(warm)) {
    try {
      warm_json.emplace_back(f, json::parse(readFile(f)));
    } catch (const json::exception& e) {
      throw InputError(f + ": not valid JSON (" + std::string(e.what()) + "); rerun the study");
    }
  }

  // 2. Figures this page renders itself, in one gnuplot run.
  const bool gnuplot = gnuplotAvailable();
  std::map<std::string, std::string> figures;
  if (gnuplot) {
    GnuplotBatch batch;
    if (bands) {
      for (const auto& o : bands->observables) {
        if (!agg_png.count(o.name)) {
          BandPlot bp;
          bp.title = o.name;
          bp.xlabel = data::observableLabel(o.name);
          bp.edges = o.edges;
          bp.nominal = o.nominal;
          bp.p16 = o.p16;
          bp.p84 = o.p84;
          bp.p2_5 = o.p2_5;
          bp.p97_5 = o.p97_5;
          bp.prior = o.prior;
          bp.truth = o.truth;
          bp.replicas = bands->replicas;
          batch.add("band_" + o.name, bp);
        }
        Heatmap hm;
        hm.title = o.name + ": bin-to-bin correlation over replicas";
        hm.axis_label = data::observableLabel(o.name);
        hm.edges = o.edges;
        hm.values = o.correlation;
        batch.add("corr_" + o.name, hm);
      }
    }
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
      lf.title = "Completed tasks against time (" + std::to_string(stats.done_at.size()) + " of " +
                 std::to_string(stats.tasks) + ")";
      lf.xlabel = std::string("time since the first dispatch [") + uname + "]";
      lf.ylabel = "tasks completed";
      lf.series.push_back(done);
      batch.add("throughput", lf);
    }
    if (warm_png.empty()) {
      std::vector<Series> curves;
      for (const auto& [f, j] : warm_json)
        for (auto& s : warmstartCurves(j)) curves.push_back(std::move(s));
      if (!curves.empty()) {
        LineFigure lf;
        lf.title = "Warm start: validation loss per epoch";
        lf.xlabel = "epoch";
        lf.ylabel = "validation loss";
        lf.series = curves;
        batch.add("warmstart", lf);
      }
    }
    if (!batch.empty()) {
      logInfo("report: rendering figures with gnuplot");
      figures = batch.render();
    }
  }

  // 3. The page.
  ReportResult res;
  std::vector<std::string> nav;
  std::string body;
  auto present = [&](const std::string& id, const std::string& title) {
    res.sections.push_back(id);
    nav.push_back("<a href=\"#" + id + "\">" + htmlEscape(title) + "</a>");
  };
  auto omit = [&](const std::string& id, const std::string& title, const std::string& why) {
    res.omitted.push_back(id + ": " + why);
    body += htmlOmittedSection(id, title, why);
  };
  auto figure = [&](const std::string& png, const std::string& caption, const std::string& what) {
    ++res.images;
    return htmlPngFigure(png, caption, what);
  };
  const std::string no_gnuplot = "gnuplot is not installed (apt-get install gnuplot-nox)";

  // Overview.
  {
    present("overview", "Overview");
    const double wall = stats.last_end > stats.first_start ? stats.last_end - stats.first_start : 0;
    const int done = stats.counts.at("done");
    std::vector<std::vector<std::string>> rows = {
        {"task kind", stats.kind},
        {"tasks (replicas x members)", std::to_string(stats.tasks) + " (" +
                                           std::to_string(stats.replicas) + " x " +
                                           std::to_string(stats.members) + ")"},
        {"executor", stats.executor},
        {"resources", stats.gpus > 0 ? std::to_string(stats.gpus) + " GPU(s) x " +
                                           std::to_string(stats.tasks_per_gpu) + " task(s) each"
                                     : std::to_string(stats.slots) + " CPU slot(s)"},
        {"threads per task", std::to_string(stats.threads_per_task)},
        {"tasks done", std::to_string(done) + " of " + std::to_string(stats.tasks)},
        {"first dispatch", timeText(stats.first_start)},
        {"last completion", timeText(stats.last_end)},
        {"wall time", wall > 0 ? formatDuration(wall) : "-"},
    };
    if (summary) {
      rows.push_back({"replicas aggregated", summary->value("replicas", json()).dump()});
      if (summary->contains("band_replicas"))
        rows.push_back({"replicas in the statistical band", (*summary)["band_replicas"].dump()});
      rows.push_back({"chains aggregated", summary->value("chains", json()).dump()});
    }
    body += "<section id=\"overview\"><h2>Overview</h2>\n" +
            htmlTable({"", "value"}, rows, "overview-table") + "</section>\n";
  }

  // Distributions.
  if (!bands) {
    omit(
        "distributions", "Unfolded distributions",
        "no " + agg + "/bands.h5 (run `foldfarm campaign aggregate " + dir + " --truth TRUTH.h5`)");
  } else {
    std::string s =
        "<section id=\"distributions\"><h2>Unfolded distributions</h2>\n<p>Unit-area "
        "densities: the mean over " +
        std::to_string(bands->replicas) + " replicas (" + std::to_string(bands->chains) +
        " chains) with the 16-84% and 2.5-97.5% bands of " + std::to_string(bands->band_replicas) +
        " bootstrap replicas, the truth and the prior (MC gen); the lower panels show "
        "ratios.</p>\n<div class=\"grid\">\n";
    int shown = 0;
    std::vector<std::string> missing;
    for (const auto& o : bands->observables) {
      if (agg_png.count(o.name)) {
        s += figure(agg_png[o.name], o.name + " (aggregation figure)", agg + "/" + o.name + ".png");
        ++shown;
      } else if (figures.count("band_" + o.name)) {
        s += figure(figures["band_" + o.name], o.name, "figure " + o.name);
        ++shown;
      } else {
        missing.push_back(o.name);
      }
    }
    s += "</div>\n";
    if (!missing.empty()) {
      std::string names;
      for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
      s += "<p class=\"note\">Not drawn (" + htmlEscape(names) + "): " + htmlEscape(no_gnuplot) +
           "</p>\n";
    }
    s += "</section>\n";
    if (shown > 0) present("distributions", "Distributions");
    body += s;
  }

  // Uncertainty breakdown.
  std::vector<std::string> obs_order;  // bands.h5's order, then the summary's other names
  if (bands)
    for (const auto& o : bands->observables) obs_order.push_back(o.name);
  if (summary)
    for (auto it = (*summary)["observables"].begin(); it != (*summary)["observables"].end(); ++it)
      if (std::find(obs_order.begin(), obs_order.end(), it.key()) == obs_order.end())
        obs_order.push_back(it.key());
  const std::vector<std::string> sources =
      summary ? uncertaintyOrder((*summary)["observables"]) : std::vector<std::string>();
  if (!summary) {
    omit("uncertainties", "Uncertainty breakdown",
         "no " + agg + "/summary.json (run `foldfarm campaign aggregate " + dir + "`)");
  } else if (sources.empty()) {
    omit("uncertainties", "Uncertainty breakdown",
         agg +
             "/summary.json has no uncertainty breakdown (aggregated by an older foldfarm); "
             "rerun `foldfarm campaign aggregate " +
             dir + "`");
  } else {
    present("uncertainties", "Uncertainties");
    std::vector<std::string> header = {"uncertainty"};
    std::vector<std::string> shown_obs;
    for (const auto& name : obs_order)
      if ((*summary)["observables"][name].contains("uncertainty")) {
        header.push_back(name);
        shown_obs.push_back(name);
      }
    std::vector<std::vector<std::string>> rows;
    for (const auto& src : sources) {
      std::vector<std::string> row = {src};
      for (const auto& name : shown_obs) {
        const json& o = (*summary)["observables"][name];
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
        const double v = jsonNumber((*summary)["observables"][name], "training_noise");
        any = any || !std::isnan(v);
        training.push_back(std::isnan(v) ? "-" : fmt(100 * v, 1) + "%");
      }
      if (any) rows.push_back(std::move(training));
    }
    std::string s =
        "<section id=\"uncertainties\"><h2>Uncertainty breakdown</h2>\n<p>Relative size of "
        "each uncertainty: the root mean square over the bins of σ / unfolded, σ from the "
        "statistical covariance (stat: data bootstrap; of which training noise: the spread of "
        "the ensemble members of a replica, shown when replicas have two or more), the "
        "MC-statistics covariance (mc_stat: simulation bootstrap, the training noise taken off "
        "where members allow, so that the total counts it once), each systematic source's "
        "symmetrised shift, the non-closure (unfolded pseudo-data minus its truth) and the "
        "total covariance (their sum). A source's ± is the noise of its shift (from the "
        "differences between its chains and the nominal chains of the same replica and "
        "member, where there are two or more): a shift not well above it is mostly noise. " +
        (summary->value("shift_noise", std::string()) == "subtracted"
             ? std::string(
                   "Here each source's noise was taken off its covariance (aggregated with "
                   "--shift-noise subtract): its row is what is left of its shift beyond its "
                   "noise.")
             : std::string("Each source counts its whole shift, noise included (aggregate with "
                           "--shift-noise subtract to take the noise off).")) +
        "</p>\n" + htmlTable(header, rows, "uncertainty-table");
    const json& variations = summary->value("variations", json::array());
    if (variations.is_array() && !variations.empty()) {
      std::vector<std::vector<std::string>> vr;
      for (const auto& v : variations) {
        if (!v.is_object()) continue;
        auto text = [&](const char* k) {
          auto f = v.find(k);
          return f == v.end()     ? std::string("-")
                 : f->is_string() ? f->get<std::string>()
                                  : f->dump();
        };
        const std::string direction = text("direction");
        vr.push_back({text("name"), text("type"), text("source"),
                      direction.empty() ? "one-sided" : direction, text("chains"),
                      text("replicas")});
      }
      s += "<h3>Variations</h3>\n" +
           htmlTable({"variation", "type", "source", "direction", "chains", "replicas"}, vr,
                     "variations-table");
    }
    std::string figs;
    for (const auto& name : obs_order)
      if (breakdown_png.count(name))
        figs += figure(breakdown_png[name], name + ": relative uncertainty per bin",
                       agg + "/" + name + "_breakdown.png");
    if (!figs.empty())
      s += "<div class=\"grid\">\n" + figs + "</div>\n";
    else
      s += "<p class=\"note\">No breakdown figures in " + htmlEscape(agg) +
           " (the aggregation draws &lt;observable&gt;_breakdown.png when gnuplot is "
           "installed).</p>\n";
    body += s + "</section>\n";
  }

  // Δ table.
  if (!summary) {
    omit("delta", "Triangular discriminator and coverage",
         "no " + agg + "/summary.json (run `foldfarm campaign aggregate " + dir +
             " --truth TRUTH.h5`)");
  } else {
    std::vector<std::vector<std::string>> rows;
    bool any_truth = false, any_total = false;
    for (const auto& name : obs_order) {
      if (!(*summary)["observables"].contains(name)) continue;
      const json& o = (*summary)["observables"][name];
      const double dp = jsonNumber(o, "delta_prior"), du = jsonNumber(o, "delta_unfolded");
      const double de = jsonNumber(o, "delta_unfolded_err");
      const double c68 = jsonNumber(o, "coverage_68"), c95 = jsonNumber(o, "coverage_95");
      const double c68_total = jsonNumber(o, "coverage_68_total");
      const double floor = jsonNumber(o, "delta_floor"), shift = jsonNumber(o, "shift_recovered");
      const double signif = jsonNumber(o, "shift_significance");
      // A shift of the mean within ~2 standard errors is noise: its fraction means nothing.
      auto shiftCell = [](double f, double z) {
        if (std::isnan(f)) return std::string("-");
        std::string c = fmt(100 * f, 0) + "%";
        if (!std::isnan(z) && z < 2) c = "(" + c + ", shift " + fmt(z, 1) + "σ)";
        return c;
      };
      if (!std::isnan(du)) any_truth = true;
      // Told apart: a prior already at the floor has nothing to unfold; an unfolded Δ at the
      // floor is as good as these sample sizes allow.
      std::string prior_cell = fmt(dp, 3);
      if (!std::isnan(dp) && !std::isnan(floor) && dp <= floor) prior_cell += " (at floor)";
      std::string unfolded_cell = std::isnan(du) ? "-" : fmt(du, 3) + " ± " + fmt(de, 3);
      if (!std::isnan(du) && !std::isnan(floor) && du <= floor) unfolded_cell += " (at floor)";
      std::vector<std::string> row = {name, prior_cell, unfolded_cell,
                                      std::isnan(floor) ? "-" : fmt(floor, 3),
                                      shiftCell(shift, signif)};
      if (baseline) {
        const json bo = (*baseline)["observables"].value(name, json::object());
        const double bd = jsonNumber(bo, "delta_unfolded"),
                     be = jsonNumber(bo, "delta_unfolded_err");
        const double bs = jsonNumber(bo, "shift_recovered");
        row.push_back(std::isnan(bd) ? "-" : fmt(bd, 3) + " ± " + fmt(be, 3));
        row.push_back(shiftCell(bs, jsonNumber(bo, "shift_significance")));
      }
      rows.push_back(row);
      rows.back().insert(
          rows.back().end(),
          {std::isnan(dp) || std::isnan(du) ? "-" : fmt(du / std::max(dp, 1e-300), 2),
           std::isnan(c68) ? "-" : fmt(100 * c68, 0) + "%"});
      if (!std::isnan(c68_total)) any_total = true;
      rows.back().push_back(std::isnan(c68_total) ? "-" : fmt(100 * c68_total, 0) + "%");
      rows.back().push_back(std::isnan(c95) ? "-" : fmt(100 * c95, 0) + "%");
      rows.back().push_back(paperDelta(name));
    }
    // Aggregations without the total band (older ones) keep the table they had.
    if (!any_total)
      for (auto& row : rows) row.erase(row.end() - 3);
    std::vector<std::string> header = {"observable", "Δ prior", "Δ unfolded", "Δ floor",
                                       "shift recovered"};
    if (baseline) {
      header.push_back("Δ baseline");
      header.push_back("shift baseline");
    }
    for (const char* h : {"unfolded / prior", "coverage 68%"}) header.push_back(h);
    if (any_total) header.push_back("coverage 68% (total)");
    for (const char* h : {"coverage 95%", "OmniLearn paper"}) header.push_back(h);
    if (!any_truth) {
      omit("delta", "Triangular discriminator and coverage",
           agg +
               "/summary.json has no truth comparison (aggregate with --truth TRUTH.h5 or a spec "
               "input 'truth')");
    } else {
      present("delta", "Δ table");
      body +=
          "<section id=\"delta\"><h2>Triangular discriminator and coverage</h2>\n<p>Δ x10<sup>3"
          "</sup> against the truth (smaller is closer): the prior (MC gen) before unfolding and "
          "the unfolded result ± its spread over the replicas; the statistical floor = the Δ that "
          "a perfect unfolding of samples of these sizes would still show (from the weights' "
          "Σw² per bin), so a Δ at the floor cannot be improved on these events; shift "
          "recovered = how much of the prior-to-truth shift of the observable's mean the "
          "unfolding recovered (100% = all, 0% = none; in brackets when the prior-to-truth shift "
          "is under 2 standard errors, i.e. noise); coverage = fraction of bins whose "
          "truth lies inside the 68% / 95% band of the replicas (total: within ± 1σ of the "
          "total covariance, systematics included). The last column is OmniLearn's published value "
          "on real Z+jets data, for orientation only.</p>\n" +
          (baseline
               ? "<p>Baseline (same data, another unfolding): " + htmlEscape(baseline_name) + " (" +
                     htmlEscape((*baseline).value("classifier", std::string("see its spec"))) +
                     ").</p>\n"
               : std::string()) +
          htmlTable(header, rows, "delta-table") + "</section>\n";
    }
  }

  // Correlations.
  if (!bands) {
    omit("correlations", "Bin-to-bin correlations", "no " + agg + "/bands.h5");
  } else if (!gnuplot) {
    omit("correlations", "Bin-to-bin correlations", no_gnuplot);
  } else {
    present("correlations", "Correlations");
    body +=
        "<section id=\"correlations\"><h2>Bin-to-bin correlations</h2>\n<p>Correlation of the "
        "unfolded densities over the bootstrap replicas (blue -1, white 0, red +1).</p>\n"
        "<div class=\"grid heat\">\n";
    for (const auto& o : bands->observables)
      body += figure(figures.at("corr_" + o.name), o.name, "correlation " + o.name);
    body += "</div></section>\n";
  }

  // Weights.
  if (weights.steps.empty()) {
    omit("weights", "Weight diagnostics",
         "no chain history (" + dir + "/tasks/<id>/history.json) in this campaign");
  } else {
    present("weights", "Weights");
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : weights.steps)
      rows.push_back({std::to_string(s.iteration), std::to_string(s.step), std::to_string(s.chains),
                      fmt(100 * s.mean_ess_fraction, 1) + "%",
                      fmt(100 * s.min_ess_fraction, 1) + "% (" + s.min_ess_task + ")",
                      std::to_string(s.clipped), std::to_string(s.non_finite),
                      fmt(s.max_weight, 2)});
    std::vector<std::vector<std::string>> worst;
    for (size_t i = 0; i < weights.chains.size() && i < 10; ++i) {
      const auto& c = weights.chains[i];
      worst.push_back({c.task, fmt(100 * c.final_ess_fraction, 1) + "%",
                       fmt(100 * c.min_ess_fraction, 1) + "%", std::to_string(c.clipped),
                       std::to_string(c.non_finite), fmt(c.max_weight, 2)});
    }
    body +=
        "<section id=\"weights\"><h2>Weight diagnostics</h2>\n<p>Effective sample size "
        "(Σw)²/Σw² as a fraction of the events, and reweighting factors that were clipped or "
        "not finite, per OmniFold iteration and step over " +
        std::to_string(weights.chains.size()) + " chains.</p>\n" +
        htmlTable({"iteration", "step", "chains", "mean ESS", "lowest ESS", "clipped", "non-finite",
                   "max weight"},
                  rows, "weights-table") +
        "<h3>Chains with the lowest ESS</h3>\n" +
        htmlTable({"task", "final ESS", "lowest ESS", "clipped", "non-finite", "max weight"}, worst,
                  "weights-chains") +
        "</section>\n";
  }

  // Campaign statistics.
  {
    present("campaign", "Campaign");
    std::vector<std::vector<std::string>> states;
    for (const auto& [k, v] : stats.counts) states.push_back({k, std::to_string(v)});
    const double wall = stats.last_end > stats.first_start ? stats.last_end - stats.first_start : 0;
    const double done = static_cast<double>(stats.done_at.size());
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
        {"throughput",
         wall > 0 ? fmt(done / wall * 3600.0, 1) + " tasks/h (" + fmt(done / wall, 2) + " tasks/s)"
                  : "-"},
        {"mean slots busy", wall > 0 ? fmt(stats.run_s / wall, 2) : "-"},
    };
    std::string hosts;
    for (const auto& [h, n] : stats.hosts)
      hosts += (hosts.empty() ? "" : ", ") + h + " (" + std::to_string(n) + ")";
    if (!hosts.empty()) acct.push_back({"hosts (attempts)", hosts});
    std::string s =
        "<section id=\"campaign\"><h2>Campaign statistics</h2>\n<h3>Tasks per state</h3>\n" +
        htmlTable({"state", "tasks"}, states, "states-table") +
        "<h3>Attempts and "
        "accounting</h3>\n" +
        htmlTable({"", "value"}, acct, "accounting-table");
    s += "<h3>Failures</h3>\n";
    if (stats.failures.empty()) {
      s += "<p id=\"no-failures\" class=\"ok\">No task failed.</p>\n";
    } else {
      std::vector<std::vector<std::string>> fr;
      for (size_t i = 0; i < stats.failures.size() && i < 50; ++i) {
        const auto& f = stats.failures[i];
        fr.push_back({f.task, f.state, std::to_string(f.attempts), std::to_string(f.failures),
                      f.exit_code < 0 ? "-" : std::to_string(f.exit_code), f.reason});
      }
      s += htmlTable({"task", "state", "attempts", "failed attempts", "last exit", "last reason"},
                     fr, "failures-table");
      if (stats.failures.size() > 50)
        s += "<p>… and " + std::to_string(stats.failures.size() - 50) +
             " more (`foldfarm campaign "
             "status " +
             htmlEscape(dir) + "`).</p>\n";
      std::vector<std::pair<int, std::string>> reasons;
      for (const auto& [r, n] : stats.failure_reasons) reasons.emplace_back(n, r);
      std::sort(reasons.rbegin(), reasons.rend());
      std::vector<std::vector<std::string>> rr;
      for (const auto& [n, r] : reasons) rr.push_back({r, std::to_string(n)});
      if (!rr.empty())
        s += "<h3>Failure reasons (all attempts)</h3>\n" +
             htmlTable({"reason", "attempts"}, rr, "reasons-table");
    }
    body += s + "</section>\n";
  }

  // Throughput.
  if (stats.done_at.empty()) {
    omit("throughput", "Throughput", "no task has completed yet");
  } else if (!gnuplot) {
    omit("throughput", "Throughput", no_gnuplot);
  } else {
    present("throughput", "Throughput");
    body +=
        "<section id=\"throughput\"><h2>Throughput</h2>\n" +
        figure(figures.at("throughput"), "tasks completed against time (journal)", "throughput") +
        "</section>\n";
  }

  // Warm start.
  {
    std::string s;
    for (const auto& p : warm_png) s += figure(readFile(p), fs::path(p).filename().string(), p);
    if (s.empty() && figures.count("warmstart"))
      s += figure(figures["warmstart"], "validation loss per epoch", "warm-start curves");
    std::vector<std::vector<std::string>> scalars;
    for (const auto& [f, j] : warm_json) {
      if (!j.is_object()) continue;
      for (auto it = j.begin(); it != j.end(); ++it)
        if (it->is_number() || it->is_string() || it->is_boolean() || it->is_null())
          scalars.push_back({it.key(), it->is_string()         ? it->get<std::string>()
                                       : it->is_null()         ? "- (not reached)"
                                       : it->is_number_float() ? shortNumber(it->get<double>())
                                                               : it->dump()});
    }
    if (s.empty() && scalars.empty()) {
      omit("warmstart", "Warm start",
           "no warm-start study in " + warm + " (run `foldfarm study warmstart --out " + warm +
               "`)");
    } else {
      present("warmstart", "Warm start");
      body +=
          "<section id=\"warmstart\"><h2>Warm start against training from scratch</h2>\n"
          "<div class=\"grid\">" +
          s + "</div>\n";
      if (!scalars.empty()) body += htmlTable({"figure", "value"}, scalars, "warmstart-table");
      body += "</section>\n";
    }
  }

  std::string nav_html;
  for (const auto& n : nav) nav_html += n;
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>foldfarm report: " +
      htmlEscape(stats.name) + "</title>\n<style>" + kCss +
      "</style></head>\n<body>\n<header><h1>Campaign " + htmlEscape(stats.name) +
      "</h1>\n<p class=\"meta\">" + htmlEscape(dir) + " &middot; generated " +
      htmlEscape(timeText(jobs::wallClockNow())) + " by foldfarm " FOLDFARM_VERSION "</p>\n<nav>" +
      nav_html + "</nav></header>\n" + body + "</body></html>\n";
  res.bytes = page.size();
  if (result) *result = res;
  return page;
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
