#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerModelCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
