// Configure-time probe (cmake/FoldfarmDeps.cmake): the legacy profiler as bench pet uses it.
#include <torch/csrc/autograd/profiler_legacy.h>

double probeLegacyProfiler() {
  namespace prof = torch::autograd::profiler;
  prof::enableProfilerLegacy(
      torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  const prof::thread_event_lists lists = prof::disableProfilerLegacy();
  double us = 0;
  for (const auto& events : lists)
    for (const prof::LegacyEvent& e : events)
      if (e.kind() == prof::EventKind::PopRange && std::string(e.name()).empty())
        us += e.cpuElapsedUs(e);
  return us;
}
