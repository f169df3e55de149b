#include "ensembles/seeds.hpp"

#include "core/base/seed.hpp"

namespace foldfarm::ensembles {
namespace {
// Purpose tags keep the two seed families apart even for equal (r, m) numbers.
constexpr uint64_t kPurposeBootstrap = 0xB0075;
constexpr uint64_t kPurposeMember = 0x3E3B;
constexpr uint64_t kPurposeMcBootstrap = 0x3CB0075;
}  // namespace

uint64_t bootstrapSeed(uint64_t campaign_seed, int replica) {
  return deriveSeed({campaign_seed, kPurposeBootstrap, static_cast<uint64_t>(replica)});
}

uint64_t mcBootstrapSeed(uint64_t campaign_seed, int replica) {
  return deriveSeed({campaign_seed, kPurposeMcBootstrap, static_cast<uint64_t>(replica)});
}

uint64_t memberSeed(uint64_t campaign_seed, int replica, int member) {
  return deriveSeed({campaign_seed, kPurposeMember, static_cast<uint64_t>(replica),
                     static_cast<uint64_t>(member)});
}

}  // namespace foldfarm::ensembles
