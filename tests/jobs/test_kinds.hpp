#pragma once
// Task kinds used only by the jobs tests:
//   crash  params.signal (default 11): the first attempt of a task raises that signal in
//          the worker (a marker file in the task directory remembers it), later attempts
//          succeed; with params.always = true every attempt crashes, with
//          params.crash = false none does.
namespace foldfarm::jobs::testing {

void registerTestTaskKinds();

}  // namespace foldfarm::jobs::testing
