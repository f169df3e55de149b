#include "apps/foldfarm/commands.hpp"

namespace foldfarm::app {

void registerCampaignCommands(CommandGroups& g) { (void)g; }

}  // namespace foldfarm::app
