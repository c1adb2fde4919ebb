// core/file_leg.hpp — a secondary leg that is a file under the secondary directory
// (core/leg.hpp): owns the file's descriptor; each operation is the system call the Image
// used to make on it.
#pragma once

#include <string>

#include "core/leg.hpp"
#include "utils/fd.hpp"

namespace fusemirror::core {

class FileLeg final : public Leg {
 public:
  // `what` names the file in messages (its path).
  FileLeg(utils::UniqueFd fd, std::string what) : fd_(std::move(fd)), what_(std::move(what)) {}

  std::string describe() const override { return what_; }
  utils::Result<std::size_t> pread(std::span<std::byte> data, std::uint64_t off) override;
  std::error_code pwrite(std::span<const std::byte> data, std::uint64_t off, std::size_t* done) override;
  std::error_code flush(bool datasync) override;
  utils::Result<std::uint64_t> size() override;
  std::error_code set_size(std::uint64_t size) override;
  std::error_code fallocate(int mode, std::uint64_t off, std::uint64_t len) override;
  std::error_code punch(std::uint64_t off, std::uint64_t len) override;
  int fd() const override { return fd_.get(); }
  void start_writeback(std::uint64_t off, std::uint64_t len) override;

 private:
  utils::UniqueFd fd_;
  std::string what_;
};

}  // namespace fusemirror::core
