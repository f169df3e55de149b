#include "core/plot/gnuplot.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm::plot {
namespace {

namespace fs = std::filesystem;

std::string num(double v) {
  if (!std::isfinite(v)) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool uniform(const std::vector<double>& edges) {
  if (edges.size() < 2) return false;
  const double w = edges[1] - edges[0];
  if (!(w > 0)) return false;
  for (size_t i = 1; i + 1 < edges.size(); ++i)
    if (std::fabs((edges[i + 1] - edges[i]) - w) > 1e-9 * std::fabs(w) + 1e-12) return false;
  return true;
}

const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                          "#9467bd", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

std::string gnuplotQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "''";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out + "'";
}

bool gnuplotAvailable() {
  static const bool available = [] {
    if (!programAvailable("gnuplot")) return false;
    ProcessOptions o;
    o.timeout = std::chrono::seconds(30);
    return runProcess({"gnuplot", "-e", "set terminal pngcairo"}, o).ok();
  }();
  return available;
}

namespace {

// The prefix of this process's figure directory in TMPDIR, "foldfarm-plot-<host>-<pid>",
// after removing those of processes of this host that are gone: a run ended by a signal
// (SIGTERM, SIGHUP, SIGKILL) cannot remove a directory on its way out, and on a shared login
// node's /tmp they piled up (half a megabyte each).
std::string figureDirPrefix() {
  std::string host = hostName();
  for (char& c : host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_')) c = '_';
  const std::string mine = "foldfarm-plot-" + host + "-";
  std::error_code ec;
  const fs::path tmp = fs::temp_directory_path(ec);
  if (!ec) {
    for (const auto& e : fs::directory_iterator(tmp, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(mine, 0) != 0) continue;
      const size_t dash = name.find('-', mine.size());
      if (dash == std::string::npos) continue;
      const std::string digits = name.substr(mine.size(), dash - mine.size());
      if (digits.empty() || digits.size() > 9 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        continue;
      const pid_t pid = static_cast<pid_t>(std::stol(digits));
      if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
      std::error_code rm;
      fs::remove_all(e.path(), rm);
      if (!rm) logDebug("removed {}, left by a run that ended on a signal", e.path().string());
    }
  }
  return mine + std::to_string(::getpid());
}

}  // namespace

GnuplotBatch::GnuplotBatch() : dir_(figureDirPrefix()) {}

std::string GnuplotBatch::newFigure(const std::string& name) {
  if (name.empty()) throw Error("figure name is empty");
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
      throw Error("figure name '" + name + "' has characters other than [A-Za-z0-9_-]");
  for (const auto& n : names_)
    if (n == name) throw Error("figure '" + name + "' added twice");
  names_.push_back(name);
  return dir_.path() + "/" + name + ".png";
}

std::string GnuplotBatch::writeData(const std::string& text) {
  const std::string path = dir_.path() + "/data" + std::to_string(data_files_++) + ".dat";
  writeFileAtomic(path, text);
  return path;
}

void GnuplotBatch::add(const std::string& name, const LineFigure& fig) {
  const std::string png = newFigure(name);
  std::string s = "reset\nset terminal pngcairo size " + std::to_string(fig.width) + "," +
                  std::to_string(fig.height) + " noenhanced font 'sans,10'\n";
  s += "set output " + gnuplotQuote(png) + "\n";
  s += "set title " + gnuplotQuote(fig.title) + "\nset xlabel " + gnuplotQuote(fig.xlabel) +
       "\nset ylabel " + gnuplotQuote(fig.ylabel) + "\n";
  // Beside or below the plot: it hides no line.
  s += fig.key_below ? "set grid\nset key outside below center horizontal\n"
                     : "set grid\nset key outside right top\n";
  if (fig.logx) s += "set logscale x 2\n";
  if (fig.logy) s += "set logscale y\n";
  if (std::isfinite(fig.xmin) && std::isfinite(fig.xmax) && fig.xmin < fig.xmax)
    s += "set xrange [" + num(fig.xmin) + ":" + num(fig.xmax) + "]\n";
  if (fig.integer_x) {
    // A short range gets a tic per count (gnuplot's own would be 0.2 apart); a long one its
    // own, whole, tics.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const Series& sr : fig.series)
      for (double x : sr.x)
        if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
    s += hi - lo <= 20 ? "set xtics 1\n" : "set format x '%.0f'\n";
  }
  std::string plot;
  for (size_t k = 0; k < fig.series.size(); ++k) {
    const Series& sr = fig.series[k];
    std::string text;
    for (size_t i = 0; i < sr.x.size() && i < sr.y.size(); ++i)
      text += num(sr.x[i]) + " " + num(sr.y[i]) + "\n";
    if (text.empty()) continue;
    const std::string file = writeData(text);
    std::string style = sr.style;
    if (style != "lines" && style != "points" && style != "steps") style = "linespoints";
    if (!plot.empty()) plot += ", \\\n  ";
    plot += gnuplotQuote(file) + " using 1:2 with " + style + " lw " + num(sr.line_width) +
            (sr.dashed ? " dt 2" : "") + " pt 7 ps 0.8 lc rgb '" +
            (sr.color.empty() ? std::string(kPalette[k % 8]) : sr.color) + "' title " +
            gnuplotQuote(sr.label);
  }
  if (plot.empty()) {
    s += "set label 1 'no data' at graph 0.5, graph 0.5 center\nplot [0:1][0:1] NaN notitle\n";
  } else {
    s += "plot " + plot + "\n";
  }
  s += "unset output\n";
  script_ += s;
}

void GnuplotBatch::add(const std::string& name, const BandPlot& fig) {
  const std::string png = newFigure(name);
  const size_t nb = fig.nominal.size();
  const bool has_truth = fig.truth.size() == nb && nb > 0;
  const bool has_total = fig.total_sigma.size() == nb && nb > 0;
  // Stepped curves: every bin contributes its left and right edge with the bin's value.
  std::string main_text, ratio_text;
  for (size_t b = 0; b < nb; ++b) {
    const double den = has_truth ? fig.truth[b] : fig.nominal[b];
    auto r = [&](double v) { return den > 0 ? v / den : std::nan(""); };
    for (double x : {fig.edges[b], fig.edges[b + 1]}) {
      main_text += num(x) + " " + num(fig.nominal[b]) + " " + num(fig.p16[b]) + " " +
                   num(fig.p84[b]) + " " + num(fig.p2_5[b]) + " " + num(fig.p97_5[b]) + " " +
                   num(has_truth ? fig.truth[b] : std::nan("")) + " " + num(fig.prior[b]);
      ratio_text += num(x) + " " + num(r(fig.nominal[b])) + " " + num(r(fig.p16[b])) + " " +
                    num(r(fig.p84[b])) + " " + num(r(fig.p2_5[b])) + " " + num(r(fig.p97_5[b])) +
                    " " + num(r(fig.prior[b]));
      if (has_total) {  // columns 9 and 10 (main), 8 and 9 (ratio): nominal ± total
        const double lo = fig.nominal[b] - fig.total_sigma[b];
        const double hi = fig.nominal[b] + fig.total_sigma[b];
        main_text += " " + num(lo) + " " + num(hi);
        ratio_text += " " + num(r(lo)) + " " + num(r(hi));
      }
      main_text += "\n";
      ratio_text += "\n";
    }
  }
  const std::string main_file = gnuplotQuote(writeData(main_text));
  const std::string ratio_file = gnuplotQuote(writeData(ratio_text));
  const std::string xr = "[" + num(fig.edges.front()) + ":" + num(fig.edges.back()) + "]";
  std::string s = "reset\nset terminal pngcairo size 760,600 noenhanced font 'sans,10'\n";
  s += "set output " + gnuplotQuote(png) + "\nset multiplot\n";
  s += "set lmargin at screen 0.12\nset rmargin at screen 0.97\n";
  s += "set tmargin at screen 0.93\nset bmargin at screen 0.37\n";
  s += "set title " +
       gnuplotQuote(fig.title + " (" + std::to_string(fig.replicas) +
                    (fig.replicas <= 1       ? " replica: no band)"
                     : fig.replica_0_in_band ? " replicas, replica 0 included)"
                                             : " bootstrap replicas)")) +
       "\n";
  s += "set ylabel 'unit-area density'\nset format x ''\nset xrange " + xr + "\nset yrange [0:*]\n";
  s += "set key top right\nset grid\nset style fill transparent solid 0.5 noborder\n";
  s += "plot " + main_file +
       " using 1:5:6 with filledcurves lc rgb '#c6dbef' title '95% band', \\\n";
  s += "  " + main_file + " using 1:3:4 with filledcurves lc rgb '#6baed6' title '68% band', \\\n";
  if (has_total) {
    s += "  " + main_file +
         " using 1:9 with lines lw 1.5 lc rgb '#ff7f0e' title '68% total (stat + syst)', \\\n";
    s += "  " + main_file + " using 1:10 with lines lw 1.5 lc rgb '#ff7f0e' notitle, \\\n";
  }
  s += "  " + main_file + " using 1:2 with lines lw 2 lc rgb '#08519c' title 'unfolded', \\\n";
  if (has_truth)
    s += "  " + main_file + " using 1:7 with lines lw 1.5 dt 2 lc rgb 'black' title 'truth', \\\n";
  s += "  " + main_file + " using 1:8 with lines lw 1.5 lc rgb '#d62728' title 'prior (MC gen)'\n";
  s += "unset title\nset tmargin at screen 0.37\nset bmargin at screen 0.10\n";
  s += "set format x '%g'\nset xlabel " + gnuplotQuote(fig.xlabel) + "\n";
  s += std::string("set ylabel ") + (has_truth ? "'ratio to truth'" : "'ratio to unfolded'") + "\n";
  // The top tick (1.6) is left out: it sat on the upper panel's 0.
  s += "set yrange [0.4:1.6]\nset ytics 0.4, 0.2, 1.4\nunset key\n";
  s += "plot " + ratio_file + " using 1:5:6 with filledcurves lc rgb '#c6dbef', \\\n";
  s += "  " + ratio_file + " using 1:3:4 with filledcurves lc rgb '#6baed6', \\\n";
  if (has_total) {
    s += "  " + ratio_file + " using 1:8 with lines lw 1.5 lc rgb '#ff7f0e', \\\n";
    s += "  " + ratio_file + " using 1:9 with lines lw 1.5 lc rgb '#ff7f0e', \\\n";
  }
  s += "  " + ratio_file + " using 1:2 with lines lw 2 lc rgb '#08519c', \\\n";
  s += "  " + ratio_file + " using 1:7 with lines lw 1.5 lc rgb '#d62728', \\\n";
  s += "  1 with lines lw 1 dt 2 lc rgb 'black'\n";
  s += "unset multiplot\nunset output\n";
  script_ += s;
}

void GnuplotBatch::add(const std::string& name, const Heatmap& fig) {
  const std::string png = newFigure(name);
  const size_t nb = fig.edges.size() > 1 ? fig.edges.size() - 1 : 0;
  if (nb == 0 || fig.values.size() != nb * nb)
    throw Error("heat map '" + name + "': " + std::to_string(fig.values.size()) + " values for " +
                std::to_string(nb) + " bins");
  const bool phys = uniform(fig.edges);
  auto coord = [&](size_t b) {
    return phys ? 0.5 * (fig.edges[b] + fig.edges[b + 1]) : static_cast<double>(b);
  };
  std::string text;
  for (size_t i = 0; i < nb; ++i) {
    for (size_t j = 0; j < nb; ++j)
      text += num(coord(j)) + " " + num(coord(i)) + " " + num(fig.values[i * nb + j]) + "\n";
    text += "\n";
  }
  const std::string file = gnuplotQuote(writeData(text));
  const std::string label = phys ? fig.axis_label : fig.axis_label + " (bin index)";
  const double lo = phys ? fig.edges.front() : -0.5, hi = phys ? fig.edges.back() : nb - 0.5;
  std::string s = "reset\nset terminal pngcairo size 560,480 noenhanced font 'sans,10'\n";
  s += "set output " + gnuplotQuote(png) + "\n";
  s += "set title " + gnuplotQuote(fig.title) + "\n";
  s += "set xlabel " + gnuplotQuote(label) + "\nset ylabel " + gnuplotQuote(label) + "\n";
  s += "set size ratio 1\nset xrange [" + num(lo) + ":" + num(hi) + "]\nset yrange [" + num(lo) +
       ":" + num(hi) + "]\n";
  s += "set palette defined (0 '#2166ac', 0.5 '#f7f7f7', 1 '#b2182b')\n";
  s += "set cbrange [" + num(fig.zmin) + ":" + num(fig.zmax) + "]\n";
  s += "plot " + file + " using 1:2:3 with image notitle\nunset output\n";
  script_ += s;
}

std::map<std::string, std::string> GnuplotBatch::render() {
  std::map<std::string, std::string> out;
  if (names_.empty()) return out;
  const std::string script = dir_.path() + "/figures.gp";
  writeFileAtomic(script, script_);
  ProcessOptions po;
  po.cwd = dir_.path();
  po.timeout = std::chrono::seconds(120);
  ProcessResult r = runProcess({"gnuplot", script}, po);
  std::string tail = r.err;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (tail.size() > 400) tail = "..." + tail.substr(tail.size() - 400);
  for (char& c : tail)
    if (c == '\n') c = ' ';
  if (r.status() != 0)
    throw Error("gnuplot failed (" + r.describe() + ") rendering figures: " + tail);
  for (const auto& n : names_) {
    const std::string png = dir_.path() + "/" + n + ".png";
    std::error_code ec;
    if (!fs::is_regular_file(png, ec) || fs::file_size(png, ec) == 0)
      throw Error("gnuplot did not write figure " + n + ": " + tail);
    out[n] = readFile(png);
  }
  return out;
}

}  // namespace foldfarm::plot
