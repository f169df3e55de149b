#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerReportCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
