#pragma once
// PNG figures rendered by gnuplot (pngcairo terminal) run as a child process with an argv
// (no shell): the data and the script are written to a private temporary directory, the
// PNG is written to a temporary name and renamed into place (atomic). Throws Error naming
// the figure when gnuplot is missing or fails (its stderr is in the message).
#include <string>
#include <vector>

namespace foldfarm::ensembles {

// Unfolded distribution with its bootstrap band, the truth and the prior, and a ratio panel
// (everything divided by the truth, or by the nominal when there is no truth).
struct BandFigure {
  std::string title;   // e.g. "mass"
  std::string xlabel;  // e.g. "jet mass [GeV]"
  std::vector<double> edges;
  std::vector<double> nominal, p16, p84, p2_5, p97_5;  // densities, one per bin
  std::vector<double> truth;                           // empty: no truth
  std::vector<double> prior;
  int replicas = 0;
};
void renderBandFigure(const BandFigure& fig, const std::string& png_path);

// Line curves y(x), e.g. validation loss per epoch.
struct Curve {
  std::string label;
  std::vector<double> x, y;
};
void renderCurves(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                  const std::vector<Curve>& curves, const std::string& png_path);

// True when `gnuplot` can be started (looked up on PATH).
bool gnuplotAvailable();

}  // namespace foldfarm::ensembles
