// test/tools/oplog.hpp — the operation log of fm_recordfs, read by fm_powercut.
//
// fm_recordfs (a FUSE pass-through under the primary, the secondary and the bitmaps at
// once) appends one record per mutating operation, in the order it executed them, with the
// data of every write inline. fm_powercut rebuilds from a snapshot and this log the states a
// power cut can leave. Documented byte by byte in docs/on-disk-format.md §5 (test tools).
//
// File: a 32-byte header, then records until the end of the file.
//    0: 8  magic "FMOPLOG1"
//    8: 2  version_major (1), 10: 2 version_minor (0)
//   12: 4  header size (32)
//   16: 8  the recorder's start time, ns since the epoch
//   24: 4  reserved (0)
//   28: 4  CRC32C of bytes [0, 28)
// Record (all integers little-endian):
//    0: 4  total length of the record in bytes, header, names, data and CRC included
//    4: 2  op (Op below)      6: 2 flags (0)
//    8: 8  seq: 1, 2, 3 ... in the order the recorder executed the operations
//   16: 8  id       the inode the op acts on (recorder ids: stable across renames, never reused)
//   24: 8  id2      parent directory (BASE, CREATE, MKDIR, UNLINK, RMDIR, LINK, SYMLINK;
//                   RENAME: the source directory)
//   32: 8  id3      RENAME: the destination directory
//   40: 8  a  48: 8 b  56: 8 c   op arguments, see Op
//   64: 4  name1 length  68: 4 name2 length  72: 4 data length  76: 4 reserved (0)
//   80: name1, name2, data (no padding)
//   end-4: 4  CRC32C of every byte of the record before it
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace fmtest {

enum class Op : std::uint16_t {
  base = 1,       // an entry that existed when recording started: id, id2 parent (0: the
                  // root itself), a = st_mode, b = size, name1
  create = 2,     // a new non-directory inode `id` named name1 in id2; a = st_mode
  mkdir = 3,      // a new directory `id` named name1 in id2; a = st_mode
  unlink = 4,     // name1 in id2 (inode id) removed
  rmdir = 5,      // directory name1 in id2 (inode id) removed
  rename = 6,     // name1 in id2 -> name2 in id3 (inode id); a = renameat2 flags; b = the
                  // inode name2 held before (replaced, or exchanged), 0 if none
  link = 7,       // inode id gets the name name1 in id2
  symlink = 8,    // a new symlink `id` named name1 in id2 pointing to name2
  write = 10,     // id: data at offset a
  truncate = 11,  // id: size a
  fallocate = 12, // id: mode a, offset b, length c
  fsync = 13,     // id: fsync (a = 0) or fdatasync (a = 1) of a file
  fsyncdir = 14,  // id: fsync of a directory
  chmod = 15,     // id: mode a
  mark = 20,      // name1: a line written to the recorder's control file by the load
  end = 21,       // the recorder stopped cleanly (the log is complete)
};

const char* op_name(Op op);
bool is_namespace(Op op);  // create, mkdir, unlink, rmdir, rename, link, symlink
bool is_data(Op op);       // write, truncate, fallocate

struct Record {
  Op op{};
  std::uint64_t seq = 0, id = 0, id2 = 0, id3 = 0, a = 0, b = 0, c = 0;
  std::string name1, name2;
  std::vector<unsigned char> data;
};

inline constexpr std::size_t kFileHeaderSize = 32;
inline constexpr std::size_t kRecordHeaderSize = 80;

// Appends records to a file (buffered; flush() writes the buffer out).
class LogWriter {
 public:
  // Creates (truncates) PATH and writes the file header; throws std::runtime_error.
  explicit LogWriter(const std::string& path);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;
  // Assigns the next seq and appends. `data`/`len`: a write's bytes (not copied twice).
  std::uint64_t append(Record r, const void* data = nullptr, std::size_t len = 0);
  void flush();
  std::uint64_t records() const { return seq_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  int fd_ = -1;
  std::uint64_t seq_ = 0, bytes_ = 0;
  std::vector<unsigned char> buf_;
};

// Reads a whole log. Throws std::runtime_error naming the file, the offset and the reason
// (bad magic, bad CRC, a truncated record, a seq out of order).
std::vector<Record> read_log(const std::string& path);

}  // namespace fmtest
