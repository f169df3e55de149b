#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerSlurmCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
