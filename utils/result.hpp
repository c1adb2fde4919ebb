// utils/result.hpp — a value or an error_code (GCC 12 has no std::expected in C++20).
#pragma once

#include <cerrno>
#include <system_error>
#include <utility>
#include <variant>

namespace fusemirror::utils {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(std::error_code ec) : v_(ec) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  std::error_code error() const { return ok() ? std::error_code{} : std::get<1>(v_); }

 private:
  std::variant<T, std::error_code> v_;
};

inline std::error_code errno_code(int e) { return {e, std::generic_category()}; }
inline std::error_code last_errno() { return errno_code(errno); }

}  // namespace fusemirror::utils
