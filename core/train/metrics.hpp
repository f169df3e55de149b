#pragma once
// Classifier metrics (torch-free): accuracy, ROC AUC and background rejection 1/eps_B at a
// fixed signal efficiency eps_S (label 1 = signal). Weighted by per-event weights when given.
#include <vector>

namespace foldfarm {

struct BinaryMetrics {
  double accuracy = 0;     // score > 0.5 predicts signal
  double auc = 0;          // area under the ROC curve (ties count one half)
  double rejection50 = 0;  // 1/eps_B at eps_S = 0.5 (infinity when eps_B = 0)
  double rejection30 = 0;  // 1/eps_B at eps_S = 0.3
};

// scores: probability of signal; labels 0/1; weights empty = all 1. A NaN score (a model that
// diverged) makes every figure NaN; jets of one class only make AUC and rejections NaN (not
// defined; they read 0).
BinaryMetrics binaryMetrics(const std::vector<double>& scores, const std::vector<int>& labels,
                            const std::vector<double>& weights = {});
// 1/eps_B at signal efficiency eps_s; NaN with one class only.
double backgroundRejection(const std::vector<double>& scores, const std::vector<int>& labels,
                           const std::vector<double>& weights, double eps_s);

}  // namespace foldfarm
