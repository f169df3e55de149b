#include "core/train/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace foldfarm {

namespace {

double w(const std::vector<double>& weights, size_t i) {
  return weights.empty() ? 1.0 : weights[i];
}

bool anyNan(const std::vector<double>& scores) {
  return std::any_of(scores.begin(), scores.end(), [](double v) { return std::isnan(v); });
}

// NaN scores are refused by the callers first: a NaN breaks the ordering the sort needs.
std::vector<size_t> descending(const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  return order;
}

}  // namespace

double backgroundRejection(const std::vector<double>& scores, const std::vector<int>& labels,
                           const std::vector<double>& weights, double eps_s) {
  double total_s = 0, total_b = 0;
  for (size_t i = 0; i < scores.size(); ++i) (labels[i] == 1 ? total_s : total_b) += w(weights, i);
  // One class only: no rejection is defined (it read 0).
  if (total_s <= 0 || total_b <= 0) return std::numeric_limits<double>::quiet_NaN();
  if (anyNan(scores)) return std::numeric_limits<double>::quiet_NaN();
  double s = 0, b = 0;
  for (size_t i : descending(scores)) {
    (labels[i] == 1 ? s : b) += w(weights, i);
    if (s >= eps_s * total_s) break;
  }
  const double eps_b = b / total_b;
  return eps_b > 0 ? 1.0 / eps_b : std::numeric_limits<double>::infinity();
}

BinaryMetrics binaryMetrics(const std::vector<double>& scores, const std::vector<int>& labels,
                            const std::vector<double>& weights) {
  BinaryMetrics m;
  double correct = 0, total = 0, total_s = 0, total_b = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const double wi = w(weights, i);
    total += wi;
    if ((scores[i] > 0.5) == (labels[i] == 1)) correct += wi;
    (labels[i] == 1 ? total_s : total_b) += wi;
  }
  m.accuracy = total > 0 ? correct / total : 0;
  if (anyNan(scores)) {
    // A model that diverged scores NaN: no figure is defined (before: the tie loop below
    // never advanced past a NaN and the evaluation hung).
    m.accuracy = m.auc = m.rejection50 = m.rejection30 = std::numeric_limits<double>::quiet_NaN();
    return m;
  }
  // AUC by sweeping thresholds from high to low; tied scores form one step (trapezoid).
  const auto order = descending(scores);
  double tp = 0, fp = 0, area = 0;
  for (size_t k = 0; k < order.size();) {
    double dtp = 0, dfp = 0;
    size_t e = k;
    do {  // the group of scores tied with order[k], at least that one
      (labels[order[e]] == 1 ? dtp : dfp) += w(weights, order[e]);
      ++e;
    } while (e < order.size() && scores[order[e]] == scores[order[k]]);
    area += dfp * (tp + dtp / 2);
    tp += dtp;
    fp += dfp;
    k = e;
  }
  m.auc = (total_s > 0 && total_b > 0) ? area / (total_s * total_b)
                                       : std::numeric_limits<double>::quiet_NaN();
  m.rejection50 = backgroundRejection(scores, labels, weights, 0.5);
  m.rejection30 = backgroundRejection(scores, labels, weights, 0.3);
  return m;
}

}  // namespace foldfarm
