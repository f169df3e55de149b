// foldfarm report D | study scaling
#include <cstdio>
#include <memory>
#include <string>

#include "apps/foldfarm/commands.hpp"
#include "report/campaign_report.hpp"

namespace foldfarm::app {
namespace {

void registerReport(CommandGroups& g) {
  auto o = std::make_shared<report::ReportOptions>();
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = g.root.add_subcommand(
      "report",
      "Write one self-contained HTML page about a campaign: unfolded distributions with bands, "
      "the Δ table, correlations, weight diagnostics, journal statistics and throughput, "
      "warm-start curves (sections without input are omitted with a note)");
  cmd->add_option("dir", *dir, "campaign directory (from `foldfarm campaign init --dir`)")->required();
  cmd->add_option("--out", o->out, "output HTML file (default D/report.html; written atomically)");
  cmd->add_option("--aggregate", o->aggregate_dir,
                  "aggregation directory with bands.h5, summary.json, PNGs (default D/aggregate)");
  cmd->add_option("--warmstart", o->warmstart_dir,
                  "warm-start study output directory (default D/warmstart)");
  cmd->callback([o, dir] {
    report::ReportResult r = report::writeCampaignReport(*dir, *o);
    std::string omitted;
    for (const auto& s : r.omitted) omitted += "\n  omitted " + s;
    std::printf("%s: %zu sections, %d figures, %zu KiB%s\n", r.path.c_str(), r.sections.size(),
                r.images, r.bytes / 1024, omitted.c_str());
  });
}

}  // namespace

void registerReportCommands(CommandGroups& g) { registerReport(g); }

}  // namespace foldfarm::app
