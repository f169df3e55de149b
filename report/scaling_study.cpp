#include "report/scaling_study.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/output_lock.hpp"
#include "core/base/process.hpp"
#include "core/base/progress.hpp"
#include "core/plot/gnuplot.hpp"
#include "report/alpha_beta.hpp"

namespace foldfarm::report {

using namespace foldfarm::plot;
namespace {

namespace fs = std::filesystem;

// Every figure a study can draw (without gnuplot, or with --no-ddp, fewer).
constexpr const char* kScalingFigures[] = {"ddp_throughput", "ddp_efficiency", "ddp_model",
                                           "scheduler_throughput", "scheduler_efficiency"};
using nlohmann::json;

std::string selfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("cannot resolve /proc/self/exe: " + ec.message());
  return p.string();
}

std::string joinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string lastLines(const std::string& text, size_t max_chars = 600) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.size() > max_chars) t = "..." + t.substr(t.size() - max_chars);
  for (char& c : t)
    if (c == '\n') c = ' ';
  return t;
}

// The JSON object a benchmark printed on stdout (it may print other lines before it).
json benchJson(const std::vector<std::string>& argv, const ProcessResult& r) {
  const size_t a = r.out.find('{'), b = r.out.rfind('}');
  if (r.status() != 0 || a == std::string::npos || b == std::string::npos || b < a)
    throw Error("benchmark failed (" + r.describe() + "): " + joinArgv(argv) + ": " +
                lastLines(r.err.empty() ? r.out : r.err));
  try {
    return json::parse(r.out.substr(a, b - a + 1));
  } catch (const json::exception& e) {
    throw Error("benchmark printed no valid JSON: " + joinArgv(argv) + ": " + e.what());
  }
}

double num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number())
    throw Error(std::string("benchmark JSON lacks the number \"") + key + "\": " + j.dump());
  return it->get<double>();
}

double tasksPerSecond(const json& j) {
  for (const char* k : {"tasks_per_s", "throughput_tasks_per_s"})
    if (j.contains(k) && j[k].is_number()) return j[k].get<double>();
  throw Error("scheduler benchmark JSON lacks \"tasks_per_s\": " + j.dump());
}

std::string f(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

}  // namespace

json analyseScaling(const json& ddp, const json& scheduler, const ScalingOptions& o) {
  json out = {{"ddp", ddp}, {"scheduler", scheduler}};
  if (ddp.is_array() && !ddp.empty()) {
    const json* one = nullptr;
    for (const auto& r : ddp)
      if (num(r, "ranks") == 1) one = &r;
    if (!one) throw Error("scaling: no 1-rank data-parallel measurement to compare with");
    const double base = num(*one, "jets_per_s");
    json rows = json::array();
    std::vector<CommSample> comm;
    double overlap_sum = 0;
    int overlap_n = 0;
    for (const auto& r : ddp) {
      const int n = static_cast<int>(num(r, "ranks"));
      const double jps = num(r, "jets_per_s");
      rows.push_back({{"ranks", n},
                      {"jets_per_s", jps},
                      {"speedup", jps / base},
                      {"efficiency", jps / (n * base)},
                      {"step_ms", num(r, "step_ms")},
                      {"comm_ms", num(r, "comm_ms")},
                      {"comm_wait_ms", num(r, "comm_wait_ms")}});
      if (n >= 2) {
        comm.push_back({n, num(r, "comm_ms") * 1e-3, num(r, "gradient_bytes"),
                        static_cast<int>(num(r, "buckets"))});
        if (num(r, "comm_ms") > 0) {
          overlap_sum += std::clamp(1.0 - num(r, "comm_wait_ms") / num(r, "comm_ms"), 0.0, 1.0);
          ++overlap_n;
        }
      }
    }
    out["ddp_derived"] = rows;
    StepModel m;
    m.compute_s = o.compute_ms > 0 ? o.compute_ms * 1e-3 : num(*one, "step_ms") * 1e-3;
    m.overlap = overlap_n ? overlap_sum / overlap_n : 0.0;
    const json& last = ddp.back();
    m.bytes = num(last, "gradient_bytes");
    m.buckets = std::max(1, static_cast<int>(num(last, "buckets")));
    const double batch = num(*one, "batch_per_rank");
    json model = {{"formula",
                   "T(n) = T_compute + (1 - overlap) * [buckets * 2(n-1) * alpha + "
                   "2(n-1)/n * bytes * beta]"},
                  {"compute_ms", m.compute_s * 1e3},
                  {"compute_source", o.compute_ms > 0 ? "--compute-ms" : "measured 1-rank step"},
                  {"overlap", m.overlap},
                  {"gradient_bytes", m.bytes},
                  {"buckets", m.buckets},
                  {"batch_per_rank", batch}};
    struct Link {
      std::string name;
      AlphaBeta ab;
    };
    std::vector<Link> links;
    if (!comm.empty()) {
      AlphaBetaFit fit = fitAlphaBeta(comm, o.alpha_us * 1e-6);
      model["local_fit"] = {
          {"alpha_us", fit.link.alpha_s * 1e6},
          {"bandwidth_GBps",
           fit.link.beta_s_per_byte > 0 ? json(1e-9 / fit.link.beta_s_per_byte) : json(nullptr)},
          {"alpha_fitted", fit.alpha_fitted},
          {"rms_residual_ms", fit.rms_residual_s * 1e3}};
      links.push_back({"this node (fitted)", fit.link});
    }
    const AlphaBeta net{o.alpha_us * 1e-6, 1.0 / (o.bandwidth_gbps * 1e9)};
    model["interconnect"] = {{"alpha_us", o.alpha_us}, {"bandwidth_GBps", o.bandwidth_gbps}};
    links.push_back({"interconnect", net});
    json ext = json::array();
    for (int n : powersOfTwo(o.extrapolate_to)) {
      json row = {{"ranks", n}};
      for (const auto& l : links) {
        StepModel mm = m;
        mm.link = l.ab;
        row[l.name] = {{"step_ms", mm.stepSeconds(n) * 1e3},
                       {"jets_per_s", mm.throughput(n, batch)},
                       {"efficiency", mm.efficiency(n)}};
      }
      ext.push_back(row);
    }
    model["extrapolation"] = ext;
    out["model"] = model;
  }
  if (scheduler.is_array() && !scheduler.empty()) {
    double base = 0;
    for (const auto& r : scheduler)
      if (num(r, "slots") == 1) base = tasksPerSecond(r);
    json rows = json::array();
    for (const auto& r : scheduler) {
      const int k = static_cast<int>(num(r, "slots"));
      const double tps = tasksPerSecond(r);
      json row = {{"slots", k}, {"tasks_per_s", tps}, {"ms_per_task", tps > 0 ? 1e3 / tps : 0.0}};
      if (r.contains("makespan_efficiency") && r["makespan_efficiency"].is_number())
        row["makespan_efficiency"] = r["makespan_efficiency"];
      if (base > 0) {
        row["speedup"] = tps / base;
        row["efficiency"] = tps / (k * base);
      }
      rows.push_back(row);
    }
    out["scheduler_derived"] = rows;
  }
  return out;
}

std::string scalingMarkdown(const json& s) {
  std::string md = "# Scaling study\n\n";
  if (s.contains("ddp_derived")) {
    md +=
        "## Data-parallel training (weak scaling)\n\n| ranks | jets/s | speed-up | efficiency | "
        "step ms | all-reduce ms | not overlapped ms |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : s["ddp_derived"])
      md += "| " + std::to_string(r["ranks"].get<int>()) + " | " + f(r["jets_per_s"], 1) + " | " +
            f(r["speedup"], 2) + " | " + f(r["efficiency"], 3) + " | " + f(r["step_ms"], 2) +
            " | " + f(r["comm_ms"], 3) + " | " + f(r["comm_wait_ms"], 3) + " |\n";
    const json& m = s["model"];
    md += "\n## α–β model\n\n`" + m["formula"].get<std::string>() +
          "`\n\nT_compute = " + f(m["compute_ms"], 2) + " ms (" +
          m["compute_source"].get<std::string>() + "), overlap = " + f(m["overlap"], 2) + ", " +
          f(m["gradient_bytes"].get<double>() / 1e6, 3) + " MB of gradients in " +
          std::to_string(m["buckets"].get<int>()) + " bucket(s).\n\n";
    if (m.contains("local_fit")) {
      const json& lf = m["local_fit"];
      md +=
          "This node (fitted): α = " + f(lf["alpha_us"], 2) + " µs" +
          (lf["alpha_fitted"].get<bool>() ? "" : " (held, one rank count)") + ", bandwidth = " +
          (lf["bandwidth_GBps"].is_number() ? f(lf["bandwidth_GBps"], 2) + " GB/s" : "unbounded") +
          ", rms residual " + f(lf["rms_residual_ms"], 3) + " ms.  \n";
    }
    md += "Interconnect: α = " + f(m["interconnect"]["alpha_us"], 2) +
          " µs, bandwidth = " + f(m["interconnect"]["bandwidth_GBps"], 2) + " GB/s.\n\n| ranks |";
    std::vector<std::string> links;
    for (auto it = m["extrapolation"][0].begin(); it != m["extrapolation"][0].end(); ++it)
      if (it.key() != "ranks") links.push_back(it.key());
    for (const auto& l : links) md += " " + l + ": step ms | jets/s | efficiency |";
    md += "\n|---:|";
    for (size_t i = 0; i < links.size(); ++i) md += "---:|---:|---:|";
    md += "\n";
    for (const auto& r : m["extrapolation"]) {
      md += "| " + std::to_string(r["ranks"].get<int>()) + " |";
      for (const auto& l : links)
        md += " " + f(r[l]["step_ms"], 2) + " | " + f(r[l]["jets_per_s"], 0) + " | " +
              f(r[l]["efficiency"], 3) + " |";
      md += "\n";
    }
  }
  if (s.contains("scheduler_derived")) {
    md +=
        "\n## Campaign scheduler\n\nnoop tasks measure the orchestrator's overhead; sleep tasks "
        "the makespan efficiency (ideal makespan / measured).\n\n| slots | noop tasks/s | ms per "
        "task | speed-up | efficiency | sleep makespan efficiency "
        "|\n|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : s["scheduler_derived"])
      md += "| " + std::to_string(r["slots"].get<int>()) + " | " + f(r["tasks_per_s"], 1) + " | " +
            f(r["ms_per_task"], 3) + " | " + (r.contains("speedup") ? f(r["speedup"], 2) : "-") +
            " | " + (r.contains("efficiency") ? f(r["efficiency"], 3) : "-") + " | " +
            (r.contains("makespan_efficiency") ? f(r["makespan_efficiency"], 3) : "-") + " |\n";
  }
  return md;
}

json runScalingStudy(const ScalingOptions& o) {
  requireOutputDirectoryPath(o.out_dir, "--out");  // before minutes of measurements
  if (o.max_ranks < 1) throw InputError("--max-ranks must be >= 1");
  if (o.max_slots < 1) throw InputError("--max-slots must be >= 1");
  if (!o.ddp && !o.scheduler)
    throw InputError("nothing to run: both --no-ddp and --no-scheduler given");
  if (!(o.compute_ms >= 0 && o.compute_ms <= kMaxScalingMs))
    throw InputError(fmt::format("--compute-ms must be from 0 (measured) to {:g}", kMaxScalingMs));
  if (!(o.alpha_us >= 0 && o.alpha_us <= kMaxScalingMs))
    throw InputError(fmt::format("--alpha-us must be from 0 to {:g}", kMaxScalingMs));
  if (!(o.bandwidth_gbps >= kMinScalingGbps && o.bandwidth_gbps <= kMaxScalingGbps))
    throw InputError(fmt::format("--bandwidth-gbps must be from {:g} to {:g}", kMinScalingGbps,
                                 kMaxScalingGbps));
  if (!(o.timeout_s >= kMinScalingTimeoutS && o.timeout_s <= kMaxScalingTimeoutS))
    throw InputError(fmt::format("--timeout must be from {:g} to {:g} seconds", kMinScalingTimeoutS,
                                 kMaxScalingTimeoutS));
  const std::string exe = o.exe.empty() ? selfExe() : o.exe;
  if (::access(exe.c_str(), X_OK) != 0) throw InputError(exe + ": not an executable (--exe)");
  if (o.ddp && !programAvailable(o.mpirun))
    throw InputError(o.mpirun + ": not found; install openmpi-bin or pass --mpirun PATH");
  ProcessOptions po;
  po.extraEnv = {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1",
                 "OMPI_MCA_rmaps_base_oversubscribe=1"};
  po.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));

  const int runs = (o.ddp ? o.max_ranks : 0) + (o.scheduler ? o.max_slots : 0);
  Progress progress("scaling study", runs, "run", 0.0);
  int done = 0;
  json ddp = json::array(), sched = json::array();
  if (o.ddp) {
    for (int n = 1; n <= o.max_ranks; ++n) {
      std::vector<std::string> argv = {o.mpirun,          "--allow-run-as-root",
                                       "--oversubscribe", "-np",
                                       std::to_string(n), exe,
                                       "bench",           "ddp",
                                       "--preset",        o.preset,
                                       "--batch",         std::to_string(o.batch),
                                       "--steps",         std::to_string(o.steps),
                                       "--particles",     std::to_string(o.particles),
                                       "--threads",       "1",
                                       "--json"};
      logInfo("scaling: data parallel on {} rank(s): {}", n, joinArgv(argv));
      json j = benchJson(argv, runProcess(argv, po));
      if (!j.contains("batch_per_rank")) j["batch_per_rank"] = o.batch;
      ddp.push_back(j);
      logInfo("scaling: {} rank(s): {:.1f} jets/s, step {:.2f} ms, all-reduce {:.3f} ms", n,
              num(j, "jets_per_s"), num(j, "step_ms"), num(j, "comm_ms"));
      progress.update(++done, "ddp n=" + std::to_string(n));
    }
  }
  if (o.scheduler) {
    for (int k = 1; k <= o.max_slots; ++k) {
      std::vector<std::string> argv = {exe,
                                       "bench",
                                       "scheduler",
                                       "--tasks",
                                       std::to_string(o.tasks),
                                       "--slots",
                                       std::to_string(k),
                                       "--sleep-tasks",
                                       std::to_string(o.sleep_tasks),
                                       "--sleep-seconds",
                                       std::to_string(o.sleep_s),
                                       "--json"};
      logInfo("scaling: scheduler with {} slot(s): {}", k, joinArgv(argv));
      json j = benchJson(argv, runProcess(argv, po));
      j["slots"] = k;
      sched.push_back(j);
      logInfo("scaling: {} slot(s): {:.1f} tasks/s", k, tasksPerSecond(j));
      progress.update(++done, "scheduler k=" + std::to_string(k));
    }
  }
  progress.finish();

  json study = analyseScaling(ddp, sched, o);
  study["options"] = {{"max_ranks", o.max_ranks},
                      {"max_slots", o.max_slots},
                      {"preset", o.preset},
                      {"batch", o.batch},
                      {"steps", o.steps},
                      {"particles", o.particles},
                      {"tasks", o.tasks},
                      {"sleep_tasks", o.sleep_tasks},
                      {"sleep_s", o.sleep_s},
                      {"host", hostName()},
                      {"cores", static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))}};

  // Figures (rendered before anything is written).
  std::map<std::string, std::string> pngs;
  if (gnuplotAvailable()) {
    GnuplotBatch batch;
    if (study.contains("ddp_derived")) {
      Series thr{"measured", {}, {}}, ideal{"ideal (n x 1 rank)", {}, {}, "lines"},
          eff{"measured", {}, {}};
      for (const auto& r : study["ddp_derived"]) {
        thr.x.push_back(r["ranks"]);
        thr.y.push_back(r["jets_per_s"]);
        ideal.x.push_back(r["ranks"]);
        ideal.y.push_back(r["ranks"].get<double>() *
                          study["ddp_derived"][0]["jets_per_s"].get<double>() /
                          study["ddp_derived"][0]["ranks"].get<double>());
        eff.x.push_back(r["ranks"]);
        eff.y.push_back(r["efficiency"]);
      }
      batch.add("ddp_throughput",
                LineFigure{"Data-parallel PET training (" + o.preset + ", batch " +
                               std::to_string(o.batch) + " per rank)",
                           "MPI ranks",
                           "jets/s",
                           {thr, ideal}});
      batch.add("ddp_efficiency",
                LineFigure{
                    "Weak-scaling efficiency", "MPI ranks", "jets/s / (n x 1-rank jets/s)", {eff}});
      std::vector<Series> model;
      const json& ext = study["model"]["extrapolation"];
      for (auto it = ext[0].begin(); it != ext[0].end(); ++it) {
        if (it.key() == "ranks") continue;
        Series s{it.key(), {}, {}, "linespoints"};
        for (const auto& r : ext) {
          s.x.push_back(r["ranks"]);
          s.y.push_back(r[it.key()]["efficiency"]);
        }
        model.push_back(s);
      }
      model.push_back(eff);
      model.back().label = "measured";
      model.back().style = "points";
      LineFigure mf{"alpha-beta model: efficiency against ranks", "ranks", "efficiency", model};
      mf.logx = true;
      batch.add("ddp_model", mf);
    }
    if (study.contains("scheduler_derived")) {
      Series thr{"measured", {}, {}}, eff{"noop throughput / (k x 1 slot)", {}, {}},
          mk{"sleep tasks: ideal / measured makespan", {}, {}};
      for (const auto& r : study["scheduler_derived"]) {
        thr.x.push_back(r["slots"]);
        thr.y.push_back(r["tasks_per_s"]);
        if (r.contains("efficiency")) {
          eff.x.push_back(r["slots"]);
          eff.y.push_back(r["efficiency"]);
        }
        if (r.contains("makespan_efficiency")) {
          mk.x.push_back(r["slots"]);
          mk.y.push_back(r["makespan_efficiency"]);
        }
      }
      batch.add("scheduler_throughput", LineFigure{"Campaign scheduler throughput (" +
                                                       std::to_string(o.tasks) + " noop tasks)",
                                                   "worker slots",
                                                   "tasks/s",
                                                   {thr}});
      batch.add(
          "scheduler_efficiency",
          LineFigure{"Campaign scheduler efficiency", "worker slots", "efficiency", {eff, mk}});
    }
    pngs = batch.render();
  } else {
    logWarn("scaling: gnuplot not found; writing the tables without figures");
  }

  // Every output is staged and all are renamed into place together: a study that fails
  // changes nothing. Figures of an earlier study into this directory that this one did not
  // draw (--no-ddp, no gnuplot) are removed after: the directory holds one study.
  OutputDirectoryLock lock(o.out_dir, "--out");
  std::vector<AtomicFile> staged;
  staged.emplace_back(o.out_dir + "/scaling.json");
  staged.back().write(study.dump(2) + "\n");
  staged.emplace_back(o.out_dir + "/scaling.md");
  staged.back().write(scalingMarkdown(study));
  for (const auto& [name, bytes] : pngs) {
    staged.emplace_back(o.out_dir + "/" + name + ".png");
    staged.back().write(bytes);
  }
  for (AtomicFile& f : staged) f.commit();
  std::vector<std::string> written, figures;
  for (const AtomicFile& f : staged) written.push_back(f.path());
  for (const char* name : kScalingFigures) figures.push_back(o.out_dir + "/" + name + ".png");
  removeOutputsNotWritten(figures, written, "scaling");
  logInfo("scaling: wrote {}/scaling.json, scaling.md and {} figure(s)", o.out_dir, pngs.size());
  return study;
}

}  // namespace foldfarm::report
