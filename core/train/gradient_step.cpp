#include "core/train/gradient_step.hpp"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <map>
#include <mutex>

#ifdef FOLDFARM_TORCH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "core/base/error.hpp"
#include "core/base/log.hpp"
#include "core/train/device.hpp"
#include "core/train/optim.hpp"

namespace foldfarm {

using torch::Tensor;

#ifdef FOLDFARM_TORCH_CUDA
namespace {

// The parts of a batch that a captured step reads, and so its shape key.
std::vector<Tensor*> batchTensors(JetBatch& b) {
  std::vector<Tensor*> out{&b.particles, &b.mask, &b.jets, &b.labels, &b.weights, &b.row_mask};
  if (b.offset.defined()) out.push_back(&b.offset);
  return out;
}

std::vector<int64_t> shapeKey(JetBatch& b) {
  std::vector<int64_t> key;
  for (Tensor* t : batchTensors(b)) {
    key.push_back(t->dim());
    for (int64_t d : t->sizes()) key.push_back(d);
  }
  return key;
}

}  // namespace

struct GradientStep::Graphs {
  struct Entry {
    JetBatch input;  // the capture's input tensors (static form)
    at::cuda::CUDAGraph graph;
    Tensor loss;  // the capture's output
    bool captured = false;
  };
  std::map<std::vector<int64_t>, std::unique_ptr<Entry>> by_shape;
  decltype(at::cuda::graph_pool_handle()) pool{0, 0};
  bool have_pool = false;
  bool warned_full = false;
  int64_t captured = 0, replays = 0;
};
#else
struct GradientStep::Graphs {
  int64_t captured = 0, replays = 0;
};
#endif

std::string GradientStep::graphsUnavailableReason(const torch::Device& device,
                                                  const GradientStepOptions& o) {
#ifndef FOLDFARM_TORCH_CUDA
  (void)device;
  (void)o;
  return "this foldfarm was built against a LibTorch without CUDA";
#else
  if (!device.is_cuda()) return "they need a GPU (--device cuda)";
  if (o.world_size > 1)
    return "they run on one rank only (data-parallel gradient hooks run collectives inside "
           "backward)";
  if (!o.fixed_shapes) return "they need fixed batch shapes (--fixed-shapes)";
  if (o.host_draws) return "they need the random draws made on the device";
  if (o.draw_generator.defined())
    return "they capture the GPU's default generator only, not a generator of the model's own";
  return "";
#endif
}

GradientStep::GradientStep(Pet model, torch::optim::Optimizer& opt, GradientStepOptions o)
    : model_(std::move(model)),
      opt_(opt),
      o_(std::move(o)),
      device_(model_->parameters().front().device()) {
  if (o_.cuda_graphs) {
    const std::string why = graphsUnavailableReason(device_, o_);
    if (!why.empty()) throw InputError("CUDA graphs cannot be used: " + why);
    graphs_ = std::make_unique<Graphs>();
  }
  if (o_.draw_generator.defined())
    model_->setDrawGenerator(o_.draw_generator);
  else if (device_.is_cuda() && !o_.host_draws)
    model_->setDrawGenerator(at::globalContext().defaultGenerator(device_));
}

GradientStep::~GradientStep() {
  model_->setDrawGenerator(at::Generator());
}

int64_t GradientStep::graphsCaptured() const {
  return graphs_ ? graphs_->captured : 0;
}

int64_t GradientStep::replays() const {
  return graphs_ ? graphs_->replays : 0;
}

void GradientStep::seedDraws(uint64_t seed) {
  at::Generator& gen = model_->drawGenerator();
  const std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

Tensor GradientStep::eager(const JetBatch& b) {
  Tensor loss;
  {
    // A capture must contain its casts: no autocast cache with graphs.
    const Bf16Autocast autocast(o_.precision == "bf16", device_.type(),
                                /*cache=*/graphs_ == nullptr);
    const DrawRowsGuard draw_rows(model_, b.realRows());
    if (o_.objective == Objective::kPretrain)
      loss = pretrainLoss(model_, b, model_->drawGenerator()).total;
    else
      loss = classifierLoss(classifierLogits(model_, b), b);
  }
  loss.backward();
  return loss.detach();
}

bool GradientStep::wouldCapture(const JetBatch& batch) const {
  if (!graphs_) return false;
#ifdef FOLDFARM_TORCH_CUDA
  JetBatch b = batch;
  b.row_mask = torch::empty({b.size()});  // staticForm's row mask: only its shape counts
  const auto it = graphs_->by_shape.find(shapeKey(b));
  return it != graphs_->by_shape.end() && !it->second->captured;
#else
  return false;
#endif
}

Tensor GradientStep::run(const JetBatch& batch, uint64_t draw_seed) {
  if (!graphs_) {
    seedDraws(draw_seed);
    zeroGradients(opt_);
    return eager(batch);
  }
#ifndef FOLDFARM_TORCH_CUDA
  throw Error("GradientStep: CUDA graphs in a build without CUDA");
#else
  JetBatch b = staticForm(batch);
  Graphs& g = *graphs_;
  const std::vector<int64_t> key = shapeKey(b);
  auto it = g.by_shape.find(key);
  const c10::cuda::CUDAGuard device_guard(device_);
  auto sync = [&] { torch::cuda::synchronize(device_.index()); };
  if (it == g.by_shape.end()) {
    if (static_cast<int>(g.by_shape.size()) >= kMaxGraphs) {
      if (!g.warned_full) {
        logWarn("CUDA graphs: more than {} batch shapes; further shapes run eagerly", kMaxGraphs);
        g.warned_full = true;
      }
      seedDraws(draw_seed);
      zeroGradients(opt_);
      return eager(b);
    }
    // 1. First batch of this shape: the inputs are allocated, and the step runs eagerly on
    //    a side stream (the warm-up a capture needs).
    auto entry = std::make_unique<Graphs::Entry>();
    entry->input = b;
    for (Tensor* t : batchTensors(entry->input)) *t = t->clone();
    Graphs::Entry& e = *entry;
    g.by_shape.emplace(key, std::move(entry));
    seedDraws(draw_seed);
    zeroGradients(opt_);
    sync();
    Tensor loss;
    {
      const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool(false, device_.index()));
      loss = eager(e.input).clone();
    }
    sync();
    return loss;
  }
  Graphs::Entry& e = *it->second;
  JetBatch& in = e.input;
  {
    std::vector<Tensor*> dst = batchTensors(in), src = batchTensors(b);
    for (size_t i = 0; i < dst.size(); ++i) dst[i]->copy_(*src[i], /*non_blocking=*/true);
  }
  zeroGradients(opt_);
  if (!e.captured) {
    // 2. Second batch: capture forward, loss and backward on a side stream (nothing runs
    //    yet), then replay below. The warm-up's cached memory is given back first: while a
    //    capture is underway the allocator frees no cached block, so the capture would need
    //    the warm-up's memory on top of its own.
    sync();
    c10::cuda::CUDACachingAllocator::emptyCache();
    {
      const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool(false, device_.index()));
      seedDraws(draw_seed);
      e.graph.capture_begin(g.pool);
      try {
        e.loss = eager(in);
      } catch (...) {
        // A capture left open (out of memory during it) makes every later allocator call on
        // the device fail, the caller's emptyCache included: ended, and the shape forgotten,
        // before the error goes on.
        try {
          e.graph.capture_end();
        } catch (...) {
        }
        g.by_shape.erase(it);
        throw;
      }
      e.graph.capture_end();
    }
    sync();
    if (!g.have_pool) {
      g.pool = e.graph.pool();
      g.have_pool = true;
    }
    e.captured = true;
    ++g.captured;
    logInfo("CUDA graphs: captured the step for batch shape {} x {} ({} graph(s))",
            in.particles.size(0), in.particles.size(1), g.captured);
  }
  // 3. Replay: the generator's seed and offset of this step are read at replay.
  seedDraws(draw_seed);
  e.graph.replay();
  ++g.replays;
  // A copy: every shape's graph shares one memory pool, and graphs replayed in another order
  // than they were captured (batches of random widths) may reuse this output's memory as a
  // temporary, so the next replay of any shape could overwrite it.
  return e.loss.clone();
#endif
}

void requireCudaGraphs(const torch::Device& device, int world_size, const std::string& who) {
  GradientStepOptions o;
  o.world_size = world_size;
  o.fixed_shapes = true;
  const std::string why = GradientStep::graphsUnavailableReason(device, o);
  if (!why.empty()) throw InputError(who + ": CUDA graphs cannot be used: " + why);
}

void clipGradientNorm(const std::vector<Tensor>& params, double max_norm, FlatParameters* flat) {
  torch::NoGradGuard no_grad;
  if (flat != nullptr && flat->grads().is_cuda()) {
    flat->attachGradients();  // a replaced .grad back into the buffer
    const Tensor& grads = flat->grads();
    const Tensor coef = (max_norm / (grads.norm() + 1e-6)).clamp_max(1.0);
    grads.mul_(coef);
    return;
  }
  // torch::nn::utils::clip_grad_norm_ (norm type 2) without reading the norm back.
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  std::vector<Tensor> norms;
  norms.reserve(grads.size());
  for (const Tensor& g : grads) norms.push_back(g.data().norm(2.0));
  const Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2.0);
  const Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (Tensor& g : grads) g.data().mul_(coef);
}

}  // namespace foldfarm
