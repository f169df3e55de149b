#include "ensembles/plot.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/base/process.hpp"

namespace foldfarm::ensembles {
namespace {

namespace fs = std::filesystem;

// gnuplot with stdout discarded and stderr kept; waits.
ProcessResult runGnuplotProcess(const std::vector<std::string>& args) {
  ProcessOptions o;
  o.timeout = std::chrono::seconds(120);
  std::vector<std::string> argv = {"gnuplot"};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProcess(argv, o);
}

// gnuplot string literal in single quotes ('' escapes a quote).
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

void runGnuplot(const TempDir& tmp, const std::string& script_body, const std::string& png_path) {
  AtomicFile png(png_path);
  const std::string script = tmp.path() + "/plot.gp";
  {
    std::ofstream s(script);
    s << "set terminal pngcairo size 900,800 enhanced font 'Sans,11'\n";
    s << "set output " << quoted(png.tempPath()) << "\n";
    s << script_body;
    s << "unset output\n";
    if (!s) throw Error(png_path + ": cannot write the gnuplot script");
  }
  const ProcessResult r = runGnuplotProcess({script});
  if (!r.ok()) {
    std::string msg = r.err;
    for (char& c : msg)
      if (c == '\n') c = ' ';
    throw Error(png_path + ": gnuplot failed (" + r.describe() + "): " + msg +
                " (install gnuplot with the pngcairo terminal)");
  }
  png.commit();
}

double safeRatio(double a, double b) { return b > 0 ? a / b : NAN; }

}  // namespace

bool gnuplotAvailable() {
  if (!programAvailable("gnuplot")) return false;
  return runGnuplotProcess({"-e", "set terminal pngcairo"}).ok();
}

void renderBandFigure(const BandFigure& fig, const std::string& png_path) {
  const size_t bins = fig.nominal.size();
  if (fig.edges.size() != bins + 1) throw Error(png_path + ": band figure has bad edges");
  const bool has_truth = !fig.truth.empty();
  const std::vector<double>& ref = has_truth ? fig.truth : fig.nominal;
  TempDir tmp("foldfarm-plot");
  const std::string dat = tmp.path() + "/band.dat";
  {
    std::ofstream d(dat);
    d.precision(10);
    // Columns: 1 x, 2 nominal, 3 p16, 4 p84, 5 p2.5, 6 p97.5, 7 truth, 8 prior, then 9-15 the
    // same seven divided by ref.
    // Each bin is written at both its edges so filled curves and lines are steps.
    for (size_t b = 0; b < bins; ++b) {
      for (double x : {fig.edges[b], fig.edges[b + 1]}) {
        double t = has_truth ? fig.truth[b] : NAN;
        d << x << ' ' << fig.nominal[b] << ' ' << fig.p16[b] << ' ' << fig.p84[b] << ' '
          << fig.p2_5[b] << ' ' << fig.p97_5[b] << ' ' << t << ' ' << fig.prior[b] << ' '
          << safeRatio(fig.nominal[b], ref[b]) << ' ' << safeRatio(fig.p16[b], ref[b]) << ' '
          << safeRatio(fig.p84[b], ref[b]) << ' ' << safeRatio(fig.p2_5[b], ref[b]) << ' '
          << safeRatio(fig.p97_5[b], ref[b]) << ' ' << safeRatio(t, ref[b]) << ' '
          << safeRatio(fig.prior[b], ref[b]) << '\n';
      }
    }
    if (!d) throw Error(png_path + ": cannot write plot data");
  }
  std::ostringstream s;
  const std::string qd = quoted(dat);
  s << "set multiplot\n"
    << "set lmargin at screen 0.12\nset rmargin at screen 0.96\n"
    << "set tmargin at screen 0.93\nset bmargin at screen 0.36\n"
    << "set title " << quoted(fig.title + " (" + std::to_string(fig.replicas) +
                                (fig.replicas == 1 ? " replica)" : " replicas)"))
    << "\nset ylabel 'normalised density'\nset format x ''\nset key top right\n"
    << "set style fill transparent solid 0.35 noborder\n"
    << "set yrange [0:*]\n"
    << "plot " << qd << " u 1:5:6 w filledcurves lc rgb '#9ecae1' t '95% band', "
    << qd << " u 1:3:4 w filledcurves lc rgb '#3182bd' t '68% band', "
    << qd << " u 1:2 w l lw 2 lc rgb '#08306b' t 'unfolded', ";
  if (has_truth) s << qd << " u 1:7 w l lw 2 dt 2 lc rgb 'black' t 'truth', ";
  s << qd << " u 1:8 w l lw 1.5 lc rgb '#e6550d' t 'prior (MC gen)'\n";
  s << "unset title\nset tmargin at screen 0.36\nset bmargin at screen 0.09\n"
    << "set format x '%g'\nset xlabel " << quoted(fig.xlabel) << "\n"
    << "set ylabel " << quoted(has_truth ? "ratio to truth" : "ratio to unfolded") << "\n"
    << "set yrange [0.5:1.5]\nset ytics 0.5, 0.25, 1.25\nunset key\nset grid ytics\n"
    << "plot " << qd << " u 1:12:13 w filledcurves lc rgb '#9ecae1', " << qd
    << " u 1:10:11 w filledcurves lc rgb '#3182bd', " << qd
    << " u 1:9 w l lw 2 lc rgb '#08306b', " << qd
    << " u 1:15 w l lw 1.5 lc rgb '#e6550d', 1 w l lc rgb 'black' dt 2\n"
    << "unset multiplot\n";
  runGnuplot(tmp, s.str(), png_path);
}

void renderCurves(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                  const std::vector<Curve>& curves, const std::string& png_path) {
  if (curves.empty()) throw Error(png_path + ": no curve to plot");
  TempDir tmp("foldfarm-plot");
  std::ostringstream s;
  s << "set title " << quoted(title) << "\nset xlabel " << quoted(xlabel) << "\nset ylabel "
    << quoted(ylabel) << "\nset key top right\nset grid\nplot ";
  for (size_t c = 0; c < curves.size(); ++c) {
    const std::string file = tmp.path() + "/curve" + std::to_string(c) + ".dat";
    std::ofstream d(file);
    d.precision(10);
    for (size_t i = 0; i < curves[c].x.size(); ++i) d << curves[c].x[i] << ' ' << curves[c].y[i] << '\n';
    if (!d) throw Error(png_path + ": cannot write plot data");
    s << (c ? ", " : "") << quoted(file) << " u 1:2 w lp lw 2 pt 7 t " << quoted(curves[c].label);
  }
  s << "\n";
  runGnuplot(tmp, s.str(), png_path);
}

}  // namespace foldfarm::ensembles
