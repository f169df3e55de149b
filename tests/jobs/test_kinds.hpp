#pragma once
// Task kinds used only by the jobs tests:
//   crash  params.signal (default 11): the first attempt of a task raises that signal in
//          the worker (a marker file in the task directory remembers it), later attempts
//          succeed; with params.always = true every attempt crashes, with
//          params.crash = false none does.
//   reads  a task that reads its inputs: the result is {"read": {key: the file's text}} of
//          every input but "truth" (its aggregation_inputs), and "params": every parameter
//          it ran with (task id, position, seed, warm_from_task, …); its value check appends each
//          file it reads to $FF_TEST_VALUES_LOG (when set) and refuses a file holding "NaN".
namespace foldfarm::jobs::testing {

void registerTestTaskKinds();

}  // namespace foldfarm::jobs::testing
