#pragma once
// PNG figures rendered by gnuplot's pngcairo terminal: the one renderer of foldfarm's
// figures (aggregation, studies, campaign report, scaling study). A GnuplotBatch collects figures
// (data files and one script in a private temporary directory) and renders all of them
// with ONE gnuplot process started from an argv (no shell); the directory is removed
// afterwards. Text from data (titles, labels) is rendered literally (noenhanced).
//
// Thread-safety: one batch per thread.
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/base/process.hpp"

namespace foldfarm::plot {

// y(x) curves. `style`: "linespoints", "lines", "points" or "steps".
struct Series {
  Series() = default;
  Series(std::string label_, std::vector<double> x_ = {}, std::vector<double> y_ = {},
         std::string style_ = "linespoints")
      : label(std::move(label_)), x(std::move(x_)), y(std::move(y_)), style(std::move(style_)) {}
  std::string label;
  std::vector<double> x, y;
  std::string style = "linespoints";
  std::string color;  // "#rrggbb"; empty: the palette's, by position
  double line_width = 2;
  bool dashed = false;
};
struct LineFigure {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  bool logx = false, logy = false;
  bool key_below = false;  // the legend under the plot (many entries), else beside it
  bool integer_x = false;  // x counts (epochs): whole-number tics only
  int width = 760, height = 460;
  // The x range drawn when both are finite (a breakdown over its distribution's range), else
  // gnuplot's own from the points.
  double xmin = std::numeric_limits<double>::quiet_NaN();
  double xmax = std::numeric_limits<double>::quiet_NaN();
};

// An unfolded distribution with its statistical 68% and 95% bands, the truth and the prior,
// and a ratio panel (everything over the unfolded nominal). The 95% band is drawn from 20
// replicas on: with fewer its percentiles are the extreme replicas themselves.
struct BandPlot {
  std::string title, xlabel;
  std::vector<double> edges;  // bins + 1
  std::vector<double> nominal, p16, p84, p2_5, p97_5, prior;
  std::vector<double> truth;  // empty: none
  // The truth's own statistical error per bin (the standard deviation of its density); the
  // truth is drawn as points with error bars then, else as a dashed line. Empty: none.
  std::vector<double> truth_sigma;
  // The total uncertainty (statistical and systematic) as nominal ± this, drawn as an
  // outlined band over the statistical ones; empty: none.
  std::vector<double> total_sigma;
  int64_t replicas = 0;  // those the bands are over
  // The bands are over every replica, replica 0 (the data as measured) among them, not over
  // bootstrap replicas alone (fewer than two of those ran); the title and legend say so.
  bool replica_0_in_band = false;
};

// Replicas from which a BandPlot draws the 95% band.
constexpr int64_t kBand95MinReplicas = 20;

// A bins x bins matrix (row-major) as a heat map, colour range [zmin, zmax]. NaN values
// (undefined, e.g. the correlation of a bin without variance) are left undrawn over a grey
// background, not coloured as a value.
struct Heatmap {
  std::string title, axis_label;
  std::string zlabel;         // the colour bar's label; empty: none
  std::vector<double> edges;  // bins + 1: axes in the observable's units when uniform
  std::vector<double> values;
  double zmin = -1, zmax = 1;
};

class GnuplotBatch {
 public:
  GnuplotBatch();
  // `name` identifies the figure in render()'s result ([A-Za-z0-9_-] only; throws Error).
  void add(const std::string& name, const LineFigure& fig);
  void add(const std::string& name, const BandPlot& fig);
  void add(const std::string& name, const Heatmap& fig);
  bool empty() const { return names_.empty(); }
  // The gnuplot script of the figures added so far (what render() runs): for tests.
  const std::string& script() const { return script_; }
  // Runs gnuplot once; returns name -> PNG bytes. Throws Error (gnuplot missing, or its
  // message when it fails or leaves a figure unwritten).
  std::map<std::string, std::string> render();

 private:
  std::string newFigure(const std::string& name);
  std::string writeData(const std::string& text);

  TempDir dir_;
  std::string script_;
  std::vector<std::string> names_;
  int data_files_ = 0;
};

// True when gnuplot starts and has the pngcairo terminal (checked once per process).
bool gnuplotAvailable();
// gnuplot single-quoted string literal of `text` (quotes doubled, newlines dropped).
std::string gnuplotQuote(const std::string& text);

}  // namespace foldfarm::plot
