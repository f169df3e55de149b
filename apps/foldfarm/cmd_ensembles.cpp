#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerEnsembleCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
