// test/tools/recorder.hpp — the recording half of fm_recordfs: the backing root, the op log
// (oplog.hpp) and the recorder's inode ids. The FUSE half (fm_recordfs.cpp) executes each
// mutating operation and logs it while holding `mu`, so that the log's order is the order
// the operations took effect in: a linearization.
//
// Ids: every inode gets one when it is first seen (the BASE records written at start, or its
// creation), stable across renames, never reused (a new inode with an old inode number gets
// a new id).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "test/tools/oplog.hpp"

namespace fmtest {

class Recorder {
 public:
  // Opens the log at LOG_PATH and writes a BASE record for everything beneath `backing_fd`
  // (the root first). Throws std::runtime_error.
  Recorder(int backing_fd, const std::string& log_path);

  // Held around each mutating operation and its log record; REQUIRED by everything below.
  std::mutex mu;

  // A fresh id for a new inode.
  std::uint64_t new_id(ino_t ino) { return ids_[ino] = next_id_++; }
  // The id of what REL (relative to the root; "." is the root) names now, 0 if nothing. An
  // inode not seen before (nothing else should change the root while it is recorded) gets
  // an id and a BASE record naming it at REL.
  std::uint64_t id_of_path(const std::string& rel);
  std::uint64_t id_of_fd(int fd, const std::string& rel);

  void log(Op op, std::uint64_t id, std::uint64_t id2 = 0, std::string name1 = {}, std::uint64_t a = 0,
           std::uint64_t b = 0, std::uint64_t c = 0, std::uint64_t id3 = 0, std::string name2 = {});
  // A record with `len` bytes of data (a write's), not copied twice.
  void log_data(Record r, const void* data, std::size_t len) { log_.append(std::move(r), data, len); }
  LogWriter& writer() { return log_; }

 private:
  std::uint64_t id_of(const struct stat& st, const std::string& rel);
  void scan(const std::string& rel, std::uint64_t dir_id);

  int bfd_;
  LogWriter log_;
  std::unordered_map<ino_t, std::uint64_t> ids_;  // backing inode -> recorder id
  std::uint64_t next_id_ = 1;
};

// "a/b/c" -> {"a/b", "c"}; "c" -> {".", "c"}.
std::pair<std::string, std::string> split_path(const std::string& rel);

}  // namespace fmtest
