// core/file_leg.hpp — a secondary leg that is a file under the secondary directory
// (core/leg.hpp): owns the file's descriptor; each operation is the system call the Image
// used to make on it. Two page-cache choices (docs/performance.md "Large folios"): no
// read-ahead on the descriptor (POSIX_FADV_RANDOM: user reads come from the primary, and
// read-ahead fills the cache with large folios that make every later small write into
// them cost ~3× the CPU), and writes issued in pieces of at most `write_piece` bytes
// (config leg_write_piece), so that the folios they allocate stay that small too — on a
// local disk file system only (utils::local_disk_fs): on FUSE, NFS or SMB each piece
// would be one more request paying the secondary's latency, so writes there go whole.
#pragma once

#include <string>

#include "core/leg.hpp"
#include "utils/fd.hpp"

namespace fusemirror::core {

class FileLeg final : public Leg {
 public:
  // `what` names the file in messages (its path). `write_piece`: the largest pwrite issued
  // (aligned to it in the file; 0: each write whole), where the file is on a local disk
  // file system; elsewhere each write goes whole.
  FileLeg(utils::UniqueFd fd, std::string what, std::uint64_t write_piece);

  std::string describe() const override { return what_; }
  utils::Result<std::size_t> pread(std::span<std::byte> data, std::uint64_t off) override;
  std::error_code pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) override;
  std::error_code flush(bool datasync) override;
  utils::Result<std::uint64_t> size() override;
  std::error_code set_size(std::uint64_t size) override;
  std::error_code fallocate(int mode, std::uint64_t off, std::uint64_t len) override;
  std::error_code punch(std::uint64_t off, std::uint64_t len) override;
  std::uint64_t write_piece() const override { return write_piece_; }
  int fd() const override { return fd_.get(); }
  bool open_direct() override;
  int direct_fd() const override { return direct_fd_.get(); }
  void start_writeback(std::uint64_t off, std::uint64_t len) override;
  void drop_cache(std::uint64_t off, std::uint64_t len) override;
  void read_ahead(std::uint64_t off, std::uint64_t len) override;

 private:
  utils::UniqueFd fd_;
  utils::UniqueFd direct_fd_;  // open_direct(): the same file, O_DIRECT
  std::string what_;
  std::size_t write_piece_;
};

}  // namespace fusemirror::core
