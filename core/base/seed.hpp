#pragma once
// Seed derivation: a seed is a pure function of the integers it is derived from, so a
// bootstrap replica's weights depend only on (campaign seed, replica) and nothing else
// (not the order tasks ran in, not the host). SplitMix64 finalisers chained over the keys.
#include <cstdint>
#include <initializer_list>

namespace foldfarm {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// deriveSeed({campaign_seed, kPurposeBootstrap, r}) etc. Distinct key lists give
// independent-looking seeds; the same list always gives the same seed.
inline uint64_t deriveSeed(std::initializer_list<uint64_t> keys) {
  uint64_t h = 0x243f6a8885a308d3ULL;  // pi digits: a fixed, arbitrary start
  for (uint64_t k : keys) h = splitmix64(h ^ splitmix64(k));
  return h;
}

}  // namespace foldfarm
