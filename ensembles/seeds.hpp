#pragma once
// Seeds of a bootstrap/ensemble campaign:
//  - replica r's Poisson(1) data weights: from (campaign seed, r) only;
//  - member m's initialisation of new layers and data order: from (campaign seed, r, m).
// Replica 0 is, by convention, the nominal fit: its data weights are all 1.
//  - an MC-statistics replica r's Poisson(1) simulation weights: from (campaign seed, r),
//    a family of its own; every replica, 0 included, is a real resample.
#include <cstdint>

namespace foldfarm::ensembles {

uint64_t bootstrapSeed(uint64_t campaign_seed, int replica);
uint64_t mcBootstrapSeed(uint64_t campaign_seed, int replica);
uint64_t memberSeed(uint64_t campaign_seed, int replica, int member);

}  // namespace foldfarm::ensembles
