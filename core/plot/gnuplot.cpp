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

namespace {

// A tick step of about a fifth of `span`: 1, 2, 2.5 or 5 times a power of ten.
double tickStep(double span) {
  const double raw = span / 5;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  return 10 * p;
}

// The ratio panel's y range: what the bands and the truth span where the distribution has
// events, padded, within [0, 3] and at least [0.8, 1.2].
struct RatioRange {
  double lo = 0.8, hi = 1.2;
};

}  // namespace

void GnuplotBatch::add(const std::string& name, const BandPlot& fig) {
  const size_t nb = fig.nominal.size();
  if (nb == 0 || fig.edges.size() != nb + 1 || fig.p16.size() != nb || fig.p84.size() != nb ||
      fig.p2_5.size() != nb || fig.p97_5.size() != nb || fig.prior.size() != nb)
    throw Error("band figure '" + name + "': " + std::to_string(fig.edges.size()) + " edges, " +
                std::to_string(nb) + " nominal values and bands or a prior of other lengths");
  const std::string png = newFigure(name);
  const bool has_truth = fig.truth.size() == nb;
  const bool truth_points = has_truth && fig.truth_sigma.size() == nb;
  const bool has_total = fig.total_sigma.size() == nb;
  const bool has_band = fig.replicas > 1;
  // With fewer replicas the 2.5 and 97.5 percentiles are the extreme replicas themselves.
  const bool draw95 = has_band && fig.replicas >= kBand95MinReplicas;
  const double nan = std::nan("");
  auto ratio = [&](size_t b, double v) { return fig.nominal[b] > 0 ? v / fig.nominal[b] : nan; };
  auto truthSigma = [&](size_t b) { return truth_points ? fig.truth_sigma[b] : 0.0; };

  // The upper panel's headroom: 1.3 times the highest drawn curve, so that the legend in the
  // top right corner does not sit on the peak.
  double top = 0;
  auto reach = [&](double v) {
    if (std::isfinite(v)) top = std::max(top, v);
  };
  for (size_t b = 0; b < nb; ++b) {
    reach(fig.nominal[b]);
    reach(fig.prior[b]);
    if (has_band) reach(draw95 ? fig.p97_5[b] : fig.p84[b]);
    if (has_truth) reach(fig.truth[b] + truthSigma(b));
    if (has_total) reach(fig.nominal[b] + fig.total_sigma[b]);
  }
  const std::string main_yrange =
      std::isfinite(1.3 * top) && top > 0 ? "[0:" + num(1.3 * top) + "]" : "[0:*]";

  // The ratio panel's range, from the bins that hold at least 0.1% of the area (every bin
  // with events when none does): an empty tail bin's ratio says nothing and would set it.
  RatioRange rr;
  {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    auto span = [&](double v) {
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    };
    bool any_filled = false;
    for (size_t b = 0; b < nb; ++b)
      any_filled |= fig.nominal[b] * (fig.edges[b + 1] - fig.edges[b]) >= 1e-3;
    for (size_t b = 0; b < nb; ++b) {
      if (!(fig.nominal[b] > 0)) continue;
      if (any_filled && fig.nominal[b] * (fig.edges[b + 1] - fig.edges[b]) < 1e-3) continue;
      if (has_band) span(ratio(b, fig.p16[b])), span(ratio(b, fig.p84[b]));
      if (draw95) span(ratio(b, fig.p2_5[b])), span(ratio(b, fig.p97_5[b]));
      if (has_total) {
        span(ratio(b, fig.nominal[b] - fig.total_sigma[b]));
        span(ratio(b, fig.nominal[b] + fig.total_sigma[b]));
      }
      // The truth's points, not their error bars: a sparse bin's bar (say 0.3 to 2.8) set a
      // range in which every other bin's ratio was a flat line.
      if (has_truth) span(ratio(b, fig.truth[b]));
    }
    if (lo <= hi) {
      const double pad = 0.1 * (hi - lo);
      rr.lo = std::min(std::max(lo - pad, 0.0), 0.8);
      rr.hi = std::max(std::min(hi + pad, 3.0), 1.2);
    }
  }

  // Stepped curves: every bin contributes its left and right edge with the bin's value.
  // main: x, nominal, p16, p84, p2.5, p97.5, truth, prior, nominal - total, nominal + total;
  // ratio (to the nominal): x, p16, p84, p2.5, p97.5, prior, the total's two, truth.
  std::string main_text, ratio_text;
  for (size_t b = 0; b < nb; ++b) {
    const double truth = has_truth ? fig.truth[b] : nan;
    const double total_lo = has_total ? fig.nominal[b] - fig.total_sigma[b] : nan;
    const double total_hi = has_total ? fig.nominal[b] + fig.total_sigma[b] : nan;
    for (double x : {fig.edges[b], fig.edges[b + 1]}) {
      main_text += num(x) + " " + num(fig.nominal[b]) + " " + num(fig.p16[b]) + " " +
                   num(fig.p84[b]) + " " + num(fig.p2_5[b]) + " " + num(fig.p97_5[b]) + " " +
                   num(truth) + " " + num(fig.prior[b]) + " " + num(total_lo) + " " +
                   num(total_hi) + "\n";
      ratio_text += num(x) + " " + num(ratio(b, fig.p16[b])) + " " + num(ratio(b, fig.p84[b])) +
                    " " + num(ratio(b, fig.p2_5[b])) + " " + num(ratio(b, fig.p97_5[b])) + " " +
                    num(ratio(b, fig.prior[b])) + " " + num(ratio(b, total_lo)) + " " +
                    num(ratio(b, total_hi)) + " " + num(ratio(b, truth)) + "\n";
    }
  }
  // The truth as points at the bin centres with its error: x, truth, sigma (upper panel);
  // x, ratio, its error, then the ratios off the panel's range at its top and bottom edge,
  // drawn there as triangles so that no point leaves the panel unsaid (ratio panel).
  std::string truth_text, truth_ratio_text;
  bool any_above = false, any_below = false;
  if (truth_points) {
    for (size_t b = 0; b < nb; ++b) {
      const double x = 0.5 * (fig.edges[b] + fig.edges[b + 1]);
      truth_text += num(x) + " " + num(fig.truth[b]) + " " + num(fig.truth_sigma[b]) + "\n";
      double t = ratio(b, fig.truth[b]);
      // A truth where the unfolded has nothing is off any range, above.
      const bool above = (std::isnan(t) && fig.truth[b] > 0) || t > rr.hi;
      const bool below = t < rr.lo;
      any_above |= above;
      any_below |= below;
      if (above || below) t = nan;
      // Just inside the panel: on its top edge a triangle read as the upper panel's.
      const double inset = 0.04 * (rr.hi - rr.lo);
      truth_ratio_text += num(x) + " " + num(t) + " " + num(ratio(b, fig.truth_sigma[b])) + " " +
                          num(above ? rr.hi - inset : nan) + " " +
                          num(below ? rr.lo + inset : nan) + "\n";
    }
  }
  const std::string main_file = gnuplotQuote(writeData(main_text));
  const std::string ratio_file = gnuplotQuote(writeData(ratio_text));
  const std::string truth_file = truth_points ? gnuplotQuote(writeData(truth_text)) : "";
  const std::string truth_ratio_file =
      truth_points ? gnuplotQuote(writeData(truth_ratio_text)) : "";

  // What the bands are: the data bootstrap's replicas, or every replica (replica 0 among them).
  const std::string of = fig.replica_0_in_band ? " (replicas)" : " (data bootstrap)";
  const std::string band95 = "'#c6dbef'", band68 = "'#6baed6'", unfolded = "'#08519c'";
  const std::string total = "'#E69F00'", prior = "'#D55E00'";  // Okabe-Ito orange, vermillion
  const std::string xr = "[" + num(fig.edges.front()) + ":" + num(fig.edges.back()) + "]";
  std::string s = "reset\nset terminal pngcairo size 760,600 noenhanced font 'sans,10'\n";
  s += "set output " + gnuplotQuote(png) + "\nset multiplot\n";
  s += "set lmargin at screen 0.12\nset rmargin at screen 0.97\n";
  s += "set tmargin at screen 0.93\nset bmargin at screen 0.37\n";
  std::string said =
      std::to_string(fig.replicas) + (fig.replicas <= 1       ? " replica: no band"
                                      : fig.replica_0_in_band ? " replicas, replica 0 included"
                                                              : " bootstrap replicas");
  if (has_band && !draw95)
    said += "; 95% band left out: < " + std::to_string(kBand95MinReplicas) + " replicas";
  s += "set title " + gnuplotQuote(fig.title + " (" + said + ")") + "\n";
  s += "set ylabel 'unit-area density'\nset format x ''\nset xrange " + xr + "\nset yrange " +
       main_yrange + "\n";
  s += "set key top right\nset grid\nset style fill transparent solid 0.5 noborder\n";
  std::vector<std::string> curves;
  if (draw95)
    curves.push_back(main_file + " using 1:5:6 with filledcurves lc rgb " + band95 + " title " +
                     gnuplotQuote("stat. 95%" + of));
  if (has_band)
    curves.push_back(main_file + " using 1:3:4 with filledcurves lc rgb " + band68 + " title " +
                     gnuplotQuote("stat. 68%" + of));
  if (has_total) {
    curves.push_back(main_file + " using 1:9 with lines lw 1.5 lc rgb " + total +
                     " title 'total 68% (stat. + syst.)'");
    curves.push_back(main_file + " using 1:10 with lines lw 1.5 lc rgb " + total + " notitle");
  }
  curves.push_back(main_file + " using 1:8 with lines lw 1.5 dt 2 lc rgb " + prior +
                   " title 'prior (MC gen)'");
  curves.push_back(main_file + " using 1:2 with lines lw 2 lc rgb " + unfolded +
                   " title 'unfolded'");
  if (truth_points)
    curves.push_back(truth_file +
                     " using 1:2:3 with yerrorbars pt 7 ps 0.6 lw 1 lc rgb 'black' title 'truth'");
  else if (has_truth)
    curves.push_back(main_file + " using 1:7 with lines lw 1.5 dt 2 lc rgb 'black' title 'truth'");
  auto plotOf = [](const std::vector<std::string>& c) {
    std::string p = "plot ";
    for (size_t i = 0; i < c.size(); ++i) p += (i ? ", \\\n  " : "") + c[i];
    return p + "\n";
  };
  s += plotOf(curves);

  s += "unset title\nset tmargin at screen 0.37\nset bmargin at screen 0.10\n";
  s += "set format x '%g'\nset xlabel " + gnuplotQuote(fig.xlabel) + "\n";
  s += "set ylabel 'ratio to unfolded'\nset yrange [" + num(rr.lo) + ":" + num(rr.hi) + "]\n";
  // Tics up to a tenth of the range below its top: a label at the top would sit on the upper
  // panel's 0.
  const double step = tickStep(rr.hi - rr.lo);
  s += "set ytics " + num(std::ceil(rr.lo / step - 1e-9) * step) + ", " + num(step) + ", " +
       num(rr.hi - 0.1 * (rr.hi - rr.lo)) + "\nset format y '%g'\nunset key\n";
  curves.clear();
  if (draw95) curves.push_back(ratio_file + " using 1:4:5 with filledcurves lc rgb " + band95);
  if (has_band) curves.push_back(ratio_file + " using 1:2:3 with filledcurves lc rgb " + band68);
  if (has_total) {
    curves.push_back(ratio_file + " using 1:7 with lines lw 1.5 lc rgb " + total);
    curves.push_back(ratio_file + " using 1:8 with lines lw 1.5 lc rgb " + total);
  }
  curves.push_back(ratio_file + " using 1:6 with lines lw 1.5 dt 2 lc rgb " + prior);
  curves.push_back("1 with lines lw 2 lc rgb " + unfolded);  // the unfolded over itself
  if (truth_points) {
    curves.push_back(truth_ratio_file +
                     " using 1:2:3 with yerrorbars pt 7 ps 0.6 lw 1 lc rgb "
                     "'black'");
    if (any_above)
      curves.push_back(truth_ratio_file + " using 1:4 with points pt 9 ps 1.2 lc rgb 'black'");
    if (any_below)
      curves.push_back(truth_ratio_file + " using 1:5 with points pt 11 ps 1.2 lc rgb 'black'");
  } else if (has_truth) {
    curves.push_back(ratio_file + " using 1:9 with lines lw 1.5 dt 2 lc rgb 'black'");
  }
  s += plotOf(curves);
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
  // gnuplot leaves NaN pixels of an image undrawn: they show this grey, which is no colour of
  // the palette (white would read as 0).
  s += "set object 1 rectangle from graph 0,0 to graph 1,1 behind fillcolor rgb '#bdbdbd' "
       "fillstyle solid noborder\n";
  s += "set palette defined (0 '#2166ac', 0.5 '#f7f7f7', 1 '#b2182b')\n";
  s += "set cbrange [" + num(fig.zmin) + ":" + num(fig.zmax) + "]\n";
  if (!fig.zlabel.empty()) s += "set cblabel " + gnuplotQuote(fig.zlabel) + "\n";
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
