// test/unit/test_thread_pool.cpp — utils::ThreadPool across a fork().
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include "utils/thread_pool.hpp"

using fusemirror::utils::Completion;
using fusemirror::utils::ThreadPool;

// The daemon opens its set (and may load images through the pool) before it daemonizes:
// the pool's workers stay in the parent. The child's tasks must still run — before the
// fix they were queued for threads that did not exist, and every fsync hung.
TEST_CASE("a pool used before fork() runs the child's tasks on fresh workers") {
  ThreadPool pool(2);
  Completion warm;
  REQUIRE(pool.submit([&] { warm.done(); }));
  warm.wait();
  REQUIRE(pool.started() == 2);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::atomic<int> ran{0};
    for (int i = 0; i < 4; ++i)
      if (!pool.submit([&] { ran.fetch_add(1); })) ::_exit(2);
    for (int i = 0; i < 500 && ran.load() < 4; ++i) ::usleep(10000);
    ::_exit(ran.load() == 4 && pool.started() == 2 ? 0 : 1);
  }
  int st = 0;
  REQUIRE(::waitpid(pid, &st, 0) == pid);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  // The parent's pool is untouched.
  Completion after;
  REQUIRE(pool.submit([&] { after.done(); }));
  after.wait();
  CHECK(pool.started() == 2);
}
