// utils/error.hpp — the exception used by set-up and CLI paths (never the data path):
// one line that names the thing and the reason. The data path returns std::error_code.
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>

namespace fusemirror::utils {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// "PATH: what: strerror(err)"
inline Error sys_error(const std::string& path, const std::string& what, int err) {
  return Error(path + ": " + what + ": " + std::strerror(err));
}

}  // namespace fusemirror::utils
