#pragma once
// Cooperative stop on SIGUSR1 / SIGTERM / SIGINT / SIGHUP (Slurm's --signal=B:USR1@grace, scancel,
// preemption, Ctrl-C). The handler only sets a flag; long work polls stopRequested() at
// safe points (between batches), saves its state and exits with kExitInterrupted.
// A second SIGINT (a second Ctrl-C: a second or more after the first) ends the process, so
// Ctrl-C twice always does; any other stop signal before or after the first SIGINT does not
// count as one (a worker that gets its orchestrator's SIGTERM and the terminal's SIGINT
// stops, saving its state).
namespace foldfarm {

void installStopHandlers();
bool stopRequested() noexcept;
// The signal number that requested the stop (0: none).
int stopSignal() noexcept;
// Tests and in-process workers: set or clear the flag directly.
void requestStop(int signo = 0) noexcept;
void clearStopRequest() noexcept;

}  // namespace foldfarm
