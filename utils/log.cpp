#include "utils/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <mutex>
#include <vector>

#include "utils/error.hpp"
#include "utils/meta_file.hpp"
#include "utils/printable.hpp"

namespace fusemirror::utils {

namespace {

// Appends each formatted record with write(2) on a descriptor we opened ourselves (spdlog's
// file sinks reopen by path, following symlinks). O_APPEND: records from concurrent writers
// never interleave within a record.
class FdSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FdSink(UniqueFd fd) : fd_(std::move(fd)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    const char* p = buf.data();
    std::size_t left = buf.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_.get(), p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // a full disk loses log lines, never the caller's operation
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}  // write(2) leaves nothing buffered in user space

 private:
  UniqueFd fd_;
};

// Passes every record on with its payload escaped by printable().
class EscapingSink final : public spdlog::sinks::sink {
 public:
  explicit EscapingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}
  void log(const spdlog::details::log_msg& msg) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    if (is_printable(payload)) return inner_->log(msg);
    const std::string escaped = printable(payload);
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
    inner_->log(copy);
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override { inner_->set_formatter(std::move(f)); }

 private:
  spdlog::sink_ptr inner_;
};

}  // namespace

UniqueFd open_log_file(const std::string& path, std::string* soft_error) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string advice = "; refusing (remove it: fusemirror creates the log itself)";
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) {
    const int err = errno;
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
      throw Error(dir + ": the log file's directory is a symbolic link; refusing");
    *soft_error = sys_error(path, "cannot open the log file's directory", err).what();
    return {};
  }
  // Created 0600 whatever the umask: the log names paths and images. O_NONBLOCK: a FIFO
  // planted here fails (ENXIO) instead of blocking the mount.
  UniqueFd fd(::openat(d.get(), name.c_str(),
                       O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600));
  if (!fd) {
    const int err = errno;
    struct stat st {};
    if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode))
      throw Error(path + ": the log file is " +
                  (S_ISLNK(st.st_mode) ? std::string("a symbolic link") : std::string("not a regular file")) +
                  advice);
    *soft_error = sys_error(path, "cannot open the log file", err).what();
    return {};
  }
  if (auto why = meta_file_problem(fd.get(), static_cast<std::size_t>(-1)); !why.empty())
    throw Error(path + ": the log file " + why + advice);
  return fd;
}

void setup_logging(const std::string& file, bool to_stderr, bool verbose) {
  std::vector<spdlog::sink_ptr> sinks;
  if (to_stderr)
    sinks.push_back(std::make_shared<EscapingSink>(std::make_shared<spdlog::sinks::stderr_sink_mt>()));
  std::string warning;
  if (!file.empty()) {
    if (UniqueFd fd = open_log_file(file, &warning))
      sinks.push_back(std::make_shared<EscapingSink>(std::make_shared<FdSink>(std::move(fd))));
  }
  auto logger = std::make_shared<spdlog::logger>("fusemirror", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] %v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  if (!warning.empty()) spdlog::warn("{}; logging to stderr only", warning);
}

}  // namespace fusemirror::utils
