#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerDistCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
