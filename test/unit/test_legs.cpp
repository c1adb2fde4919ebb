// Unit tests for core/legs: who a node made through the mount belongs to.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include "core/legs.hpp"

using namespace fusemirror;

namespace {

struct stat dir_stat(mode_t mode, gid_t gid) {
  struct stat st {};
  st.st_mode = S_IFDIR | mode;
  st.st_uid = 0;
  st.st_gid = gid;
  return st;
}

}  // namespace

TEST_SUITE("legs") {

TEST_CASE("new_node_owner: the caller's owner and mode, exactly as the kernel passed them") {
  const auto parent = dir_stat(0755, 10);
  auto o = core::new_node_owner(parent, 42, 43, 04755, false);
  CHECK(o.uid == 42);
  CHECK(o.gid == 43);
  CHECK(o.mode == 04755);  // setuid asked at create is kept
  o = core::new_node_owner(parent, 42, 43, 0700 | S_IFDIR, true);
  CHECK(o.mode == 0700);  // type bits dropped
}

TEST_CASE("new_node_owner: in a setgid directory, its group; a directory keeps setgid") {
  const auto parent = dir_stat(02775, 4343);
  auto f = core::new_node_owner(parent, 42, 43, 0644, false);
  CHECK(f.gid == 4343);
  CHECK(f.mode == 0644);  // a file does not become setgid
  auto d = core::new_node_owner(parent, 42, 43, 0755, true);
  CHECK(d.uid == 42);
  CHECK(d.gid == 4343);
  CHECK(d.mode == 02755);
  // An unprivileged daemon gives nothing away (the backing file system gives the group).
  auto u = core::new_node_owner(parent, static_cast<uid_t>(-1), static_cast<gid_t>(-1), 0755, true);
  CHECK(u.gid == static_cast<gid_t>(-1));
  CHECK(u.mode == 02755);
}

}  // TEST_SUITE
