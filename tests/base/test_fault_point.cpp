#include "core/base/fault_point.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "core/base/error.hpp"

namespace foldfarm {
namespace {

TEST(FaultPoint, MatchesItsPointAndOnlyTheNamedContext) {
  EXPECT_TRUE(faultPointMatches("worker.result_durable", "worker.result_durable", "r0001m0"));
  EXPECT_TRUE(
      faultPointMatches("worker.result_durable:r0001m0", "worker.result_durable", "r0001m0"));
  EXPECT_FALSE(
      faultPointMatches("worker.result_durable:r0001m0", "worker.result_durable", "r0002m0"));
  EXPECT_FALSE(faultPointMatches("worker.result", "worker.result_durable", ""));
  EXPECT_FALSE(faultPointMatches("worker.result_durable", "worker.result", ""));
  EXPECT_FALSE(faultPointMatches("", "worker.result_durable", ""));
}

// A child with the variable set dies by SIGKILL at the point, and passes other points.
TEST(FaultPoint, EndsTheProcessBySigkillOnlyWhereNamed) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv(kFaultEnv, "here:a", 1);
    faultPoint("elsewhere", "a");
    faultPoint("here", "b");
    faultPoint("here", "a");
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  ::unsetenv(kFaultEnv);
  faultPoint("here", "a");  // unset: nothing happens
}

// faultError throws an Error naming the point and context, only where named.
TEST(FaultPoint, ThrowsAnErrorOnlyWhereNamed) {
  ::setenv(kFaultEnv, "here:a", 1);
  EXPECT_NO_THROW(faultError("elsewhere", "a"));
  EXPECT_NO_THROW(faultError("here", "b"));
  try {
    faultError("here", "a");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "here (a): failure injected by FOLDFARM_FAULT");
    EXPECT_EQ(e.exitCode(), kExitFailure);
  }
  ::unsetenv(kFaultEnv);
  EXPECT_NO_THROW(faultError("here", "a"));
}

}  // namespace
}  // namespace foldfarm
