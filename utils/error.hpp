// utils/error.hpp — the exception used by set-up and CLI paths (never the data path):
// one line that names the thing and the reason. The data path returns std::error_code.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>

namespace fusemirror::utils {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int err = 0) : std::runtime_error(what), err_(err) {}
  // The errno behind it (sys_error), 0 when none.
  int err() const { return err_; }

 private:
  int err_;
};

// "PATH: what: strerror(err)"
inline Error sys_error(const std::string& path, const std::string& what, int err) {
  return Error(path + ": " + what + ": " + std::strerror(err), err);
}

}  // namespace fusemirror::utils
