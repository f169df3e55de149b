#pragma once
// Publication weights: aggregate/event_weights.h5, one float64 column of per-event weights
// per result for the simulated generated events, so that anyone can histogram any
// generator-level observable of the simulation with the unfolded result (h5py example in
// README.md). Each column is the mean over a replica's ensemble members of the chains'
// weights.h5 `final` (ensembles/chain_output.hpp).
//
//   weights/nominal                 nominal replica 0 (no bootstrap)
//   weights/replica_NNNN            nominal bootstrap replica NNNN (>= 1, 4 digits)
//   weights/<variation>             detector and non_closure variations (same generated
//                                   events): the variation's replica 0, or its lowest
//                                   replica when it has no replica 0 (attribute `replica`)
//   weights/<variation>_replica_NNNN  each replica of an mc_bootstrap variation (so that the
//                                   MC-statistics covariance of any observable can be
//                                   recomputed)
//   other_simulations/<variation>/weights  modelling variations (another generator's
//                                   events), replica 0 or the lowest; the group carries its
//                                   own simulation, simulation_sha256, rows, selection
//   every column's attributes: variation ("" for the nominal's), type ("nominal", or the
//   variation's), replica, members, simulation (the chains' `mc`), events_unfolded (the
//   simulation's rows, or its first max_mc_events where the chain config capped them: the
//   column is 0 past them)
//   root attributes: simulation (path), simulation_sha256, rows, selection (which events the
//   weights apply to), columns (JSON array of the names under weights/), other_simulations
//   (JSON array of the variation names under other_simulations/), build (JSON text of the
//   build that wrote the file: core/build_info/build_info.hpp)
// Rows are aligned with the simulation file's events, in its order.
//
// Columns of a variation whose chains lack `final` are left out with a warning; without
// `final` in the nominal chains the file is not written at all.
//
// Thread-safety: HDF5 is not thread-safe; one call at a time.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/base/atomic_file.hpp"

namespace foldfarm::ensembles {

// The chains of the nominal or of one variation, as the aggregation found them.
struct WeightGroup {
  std::string variation;              // "" for the nominal
  std::string type;                   // "nominal" or variationTypeName()
  std::set<std::string> simulations;  // the chains' result.json `mc` ("" when absent)
  std::map<int, std::vector<std::string>> replicas;  // replica -> its member chain directories
};

struct EventWeightColumn {
  std::string dataset;  // "weights/nominal", "other_simulations/herwig/weights", ...
  std::string variation, type, simulation;
  int replica = 0;
  int64_t rows = 0;                 // its simulation's events
  std::vector<std::string> chains;  // averaged
  // A detector or modelling variation's: the column its shift is measured from
  // ("weights/warm_reference" for a warm-started one, "weights/nominal"), written as the
  // dataset's attribute shift_from; "" for the others.
  std::string shift_from;
};

struct OtherSimulation {
  std::string variation, simulation, sha256;
  int64_t rows = 0;
};

struct EventWeightsPlan {
  std::string simulation, simulation_sha256;
  int64_t rows = 0;
  std::vector<EventWeightColumn> columns;  // weights/... first, then other_simulations/...
  std::vector<OtherSimulation> others;
};

// Which columns to write, checked before anything is written: reads the simulation files'
// row counts and SHA-256 and the length of every used chain's `final`. nullopt (logged) when
// the nominal chains carry no `final`. Throws InputError (one line naming the chain or file)
// when a chain's `final` length differs from its simulation's rows, the nominal chains
// unfold different simulations or name none, or a simulation file is unreadable.
// `groups` holds the nominal first. With `central_only`, the plan has the central columns
// only (the nominal's replica 0 and each variation's central replica; no bootstrap replica,
// no mc_bootstrap variation), and only their chains are read.
std::optional<EventWeightsPlan> planEventWeights(const std::vector<WeightGroup>& groups,
                                                 bool central_only = false);

// The columns event_weights.h5 holds for a group of `replicas` replicas of variation type
// `type` ("" for the nominal), every chain there: the nominal one per replica (one with
// `central_only`), an mc_bootstrap variation one per replica (none), any other one (its
// central replica's; a modelling variation's of its own simulation's events). What
// planEventWeights writes, for estimates made before any chain ran.
int eventWeightColumnsOf(const std::string& type, int replicas, bool central_only);

// Writes the plan's columns for `path`, one column in memory at a time, into a temporary
// file that the caller commits (with the other outputs of its run). Throws Error on a
// failed read or write (the temporary is removed then).
AtomicFile writeEventWeights(const EventWeightsPlan& plan, const std::string& path);

}  // namespace foldfarm::ensembles
