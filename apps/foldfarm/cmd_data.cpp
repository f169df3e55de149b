#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerDataCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
