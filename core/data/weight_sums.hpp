#pragma once
// Running sums of signed event weights (NLO generators give negative ones): what `data inspect`
// prints of a file's weights and what an OmniFold chain checks of the events it trains on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace foldfarm::data {

struct WeightSums {
  int64_t events = 0, negative = 0, zero = 0;
  double sum = 0, sum2 = 0, sum_negative = 0;
  double lo = std::numeric_limits<double>::infinity(),
         hi = -std::numeric_limits<double>::infinity();

  void add(double x) {
    ++events;
    sum += x;
    sum2 += x * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    if (x < 0) {
      ++negative;
      sum_negative += x;
    } else if (x == 0) {
      ++zero;
    }
  }
  double mean() const { return events > 0 ? sum / static_cast<double>(events) : 0.0; }
  double stddev() const {
    const double m = mean();
    return events > 0 ? std::sqrt(std::max(0.0, sum2 / static_cast<double>(events) - m * m)) : 0.0;
  }
  // Effective sample size (Σw)²/Σw²; 0 where the total is not positive (a sum of -4000 is not
  // 4000 events).
  double ess() const { return sum > 0 && sum2 > 0 ? sum * sum / sum2 : 0.0; }
};

}  // namespace foldfarm::data
