#include "core/data/jet_arrays.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/base/error.hpp"

namespace foldfarm::data {
namespace {

constexpr int64_t F = kNumParticleFeatures;

void checkRow(int64_t r, int64_t n) {
  if (r < 0 || r >= n)
    throw std::out_of_range("row " + std::to_string(r) + " outside [0, " + std::to_string(n) + ")");
}

template <typename T>
void appendRows(std::vector<T>& dst, const std::vector<T>& src, int64_t begin, int64_t end,
                int64_t width) {
  dst.insert(dst.end(), src.begin() + begin * width, src.begin() + end * width);
}

}  // namespace

JetArrays JetArrays::zeros(int64_t n, int64_t P, bool with_labels) {
  JetArrays a;
  a.n = n;
  a.P = P;
  a.particles.assign(static_cast<size_t>(n * P * F), 0.0f);
  a.jets.assign(static_cast<size_t>(n * kNumJetFeatures), 0.0f);
  if (with_labels) a.labels.assign(static_cast<size_t>(n), 0);
  return a;
}

JetArrays JetArrays::widened(int64_t P2) const {
  if (P2 < P)
    throw Error("JetArrays::widened: " + std::to_string(P2) + " slots are fewer than the " +
                std::to_string(P) + " the jets have");
  JetArrays b = zeros(n, P2);
  b.labels = labels;
  b.weights = weights;
  b.jets = jets;
  const size_t row = static_cast<size_t>(P) * F;
  for (int64_t i = 0; i < n; ++i)
    std::copy_n(particles.data() + static_cast<size_t>(i) * row, row,
                b.particles.data() + static_cast<size_t>(i) * P2 * F);
  return b;
}

int64_t JetArrays::multiplicity(int64_t i) const {
  int64_t m = 0;
  for (int64_t j = 0; j < P; ++j)
    if (particle(i, j)[2] != 0.0f) ++m;
  return m;
}

std::vector<uint8_t> JetArrays::realMask() const {
  std::vector<uint8_t> mask(static_cast<size_t>(n * P));
  for (int64_t k = 0; k < n * P; ++k) mask[k] = particles[k * F + 2] != 0.0f;
  return mask;
}

JetArrays JetArrays::slice(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > n)
    throw std::out_of_range("slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") outside [0, " + std::to_string(n) + ")");
  JetArrays out;
  out.n = end - begin;
  out.P = P;
  appendRows(out.particles, particles, begin, end, P * F);
  appendRows(out.jets, jets, begin, end, kNumJetFeatures);
  if (!labels.empty()) appendRows(out.labels, labels, begin, end, 1);
  if (!weights.empty()) appendRows(out.weights, weights, begin, end, 1);
  return out;
}

JetArrays JetArrays::subset(const std::vector<int64_t>& rows) const {
  JetArrays out;
  out.n = static_cast<int64_t>(rows.size());
  out.P = P;
  out.particles.reserve(rows.size() * P * F);
  out.jets.reserve(rows.size() * kNumJetFeatures);
  for (int64_t r : rows) {
    checkRow(r, n);
    appendRows(out.particles, particles, r, r + 1, P * F);
    appendRows(out.jets, jets, r, r + 1, kNumJetFeatures);
    if (!labels.empty()) out.labels.push_back(labels[r]);
    if (!weights.empty()) out.weights.push_back(weights[r]);
  }
  return out;
}

void JetArrays::append(const JetArrays& o) {
  if (n == 0 && particles.empty() && jets.empty()) {
    *this = o;
    return;
  }
  if (o.P != P)
    throw Error("cannot append jets with P=" + std::to_string(o.P) + " to P=" + std::to_string(P));
  if (labels.empty() != o.labels.empty() || weights.empty() != o.weights.empty())
    throw Error("cannot append jets with a different set of labels/weights");
  particles.insert(particles.end(), o.particles.begin(), o.particles.end());
  jets.insert(jets.end(), o.jets.begin(), o.jets.end());
  labels.insert(labels.end(), o.labels.begin(), o.labels.end());
  weights.insert(weights.end(), o.weights.begin(), o.weights.end());
  n += o.n;
}

void JetArrays::checkShapes() const {
  auto bad = [&](const char* what, size_t got, int64_t want) {
    throw Error(std::string("JetArrays: ") + what + " has " + std::to_string(got) +
                " values, expected " + std::to_string(want));
  };
  if (particles.size() != static_cast<size_t>(n * P * F))
    bad("particles", particles.size(), n * P * F);
  if (jets.size() != static_cast<size_t>(n * kNumJetFeatures))
    bad("jets", jets.size(), n * kNumJetFeatures);
  if (!labels.empty() && labels.size() != static_cast<size_t>(n)) bad("labels", labels.size(), n);
  if (!weights.empty() && weights.size() != static_cast<size_t>(n))
    bad("weights", weights.size(), n);
}

UnfoldArrays UnfoldArrays::slice(int64_t begin, int64_t end) const {
  UnfoldArrays out;
  if (hasReco()) out.reco = reco.slice(begin, end);
  if (hasGen()) out.gen = gen.slice(begin, end);
  if (!reco_subs.empty()) appendRows(out.reco_subs, reco_subs, begin, end, kNumSubs);
  if (!gen_subs.empty()) appendRows(out.gen_subs, gen_subs, begin, end, kNumSubs);
  if (!pass_reco.empty()) appendRows(out.pass_reco, pass_reco, begin, end, 1);
  if (!pass_gen.empty()) appendRows(out.pass_gen, pass_gen, begin, end, 1);
  if (!weights.empty()) appendRows(out.weights, weights, begin, end, 1);
  return out;
}

UnfoldArrays UnfoldArrays::subset(const std::vector<int64_t>& rows) const {
  UnfoldArrays out;
  if (hasReco()) out.reco = reco.subset(rows);
  if (hasGen()) out.gen = gen.subset(rows);
  for (int64_t r : rows) {
    if (!reco_subs.empty()) appendRows(out.reco_subs, reco_subs, r, r + 1, kNumSubs);
    if (!gen_subs.empty()) appendRows(out.gen_subs, gen_subs, r, r + 1, kNumSubs);
    if (!pass_reco.empty()) out.pass_reco.push_back(pass_reco[r]);
    if (!pass_gen.empty()) out.pass_gen.push_back(pass_gen[r]);
    if (!weights.empty()) out.weights.push_back(weights[r]);
  }
  return out;
}

void UnfoldArrays::append(const UnfoldArrays& o) {
  if (n() == 0 && reco.particles.empty() && gen.particles.empty()) {
    *this = o;
    return;
  }
  if (hasReco() != o.hasReco() || hasGen() != o.hasGen())
    throw Error("cannot append unfolding events with another set of levels (reco, gen)");
  if (reco_subs.empty() != o.reco_subs.empty() || gen_subs.empty() != o.gen_subs.empty() ||
      pass_reco.empty() != o.pass_reco.empty() || pass_gen.empty() != o.pass_gen.empty() ||
      weights.empty() != o.weights.empty())
    throw Error("cannot append unfolding events with a different set of datasets");
  if (hasReco()) reco.append(o.reco);
  if (hasGen()) gen.append(o.gen);
  reco_subs.insert(reco_subs.end(), o.reco_subs.begin(), o.reco_subs.end());
  gen_subs.insert(gen_subs.end(), o.gen_subs.begin(), o.gen_subs.end());
  pass_reco.insert(pass_reco.end(), o.pass_reco.begin(), o.pass_reco.end());
  pass_gen.insert(pass_gen.end(), o.pass_gen.begin(), o.pass_gen.end());
  weights.insert(weights.end(), o.weights.begin(), o.weights.end());
}

void UnfoldArrays::checkShapes() const {
  reco.checkShapes();
  gen.checkShapes();
  const int64_t N = n();
  if (!hasReco() && !hasGen()) throw Error("UnfoldArrays: neither a reco nor a gen level");
  if (hasReco() && hasGen() && reco.n != N)
    throw Error("UnfoldArrays: reco has " + std::to_string(reco.n) + " events, gen " +
                std::to_string(N));
  auto absent = [](const char* what, bool has_level, size_t got) {
    if (!has_level && got != 0)
      throw Error(std::string("UnfoldArrays: ") + what + " of a level the sample does not hold");
  };
  absent("reco_subs", hasReco(), reco_subs.size());
  absent("pass_reco", hasReco(), pass_reco.size());
  absent("gen_subs", hasGen(), gen_subs.size());
  absent("pass_gen", hasGen(), pass_gen.size());
  auto chk = [&](const char* what, size_t got, int64_t want) {
    if (got != 0 && got != static_cast<size_t>(want))
      throw Error(std::string("UnfoldArrays: ") + what + " has " + std::to_string(got) +
                  " values, expected " + std::to_string(want));
  };
  chk("reco_subs", reco_subs.size(), N * kNumSubs);
  chk("gen_subs", gen_subs.size(), N * kNumSubs);
  chk("pass_reco", pass_reco.size(), N);
  chk("pass_gen", pass_gen.size(), N);
  chk("weights", weights.size(), N);
}

}  // namespace foldfarm::data
