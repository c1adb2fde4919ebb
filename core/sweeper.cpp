#include "core/sweeper.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <condition_variable>

#include "utils/result.hpp"

namespace fusemirror::core {

SecondaryWatch::SecondaryWatch(std::string path, const Dir& opened) : path_(std::move(path)), inert_(!opened.valid()) {
  reattach(opened);
}

bool SecondaryWatch::vanished() const {
  std::lock_guard lk(mu_);
  return vanished_;
}

bool SecondaryWatch::check() {
  if (inert_) return false;  // no directory to watch (an NBD secondary)
  struct stat st {};
  const bool ok = ::stat(path_.c_str(), &st) == 0;
  std::lock_guard lk(mu_);
  if (vanished_ || (ok && st.st_dev == dev_ && st.st_ino == ino_)) return false;
  vanished_ = true;
  return true;
}

void SecondaryWatch::reattach(const Dir& d) {
  struct stat st {};
  (void)::fstat(d.fd(), &st);
  std::lock_guard lk(mu_);
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  vanished_ = false;
}

void Sweeper::start() {
  thread_ = std::jthread([this](std::stop_token st) { main(st); });
}

void Sweeper::stop() { thread_ = {}; }

void Sweeper::main(std::stop_token st) {
  std::mutex m;
  std::condition_variable_any cv;
  const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(period_s_));
  auto next_sweep = std::chrono::steady_clock::now() + period;
  while (!st.stop_requested()) {
    // The identity check runs often (time to detect a lost secondary), sweeps every period.
    {
      std::unique_lock lk(m);
      cv.wait_for(lk, st, std::chrono::milliseconds(500), [] { return false; });
    }
    if (st.stop_requested()) return;
    if (watch_.check()) {
      spdlog::error("{}: the secondary directory vanished or was replaced (unmounted?); all images "
                    "degraded", watch_.path());
      for (auto& img : table_.snapshot()) img->fail_secondary("identity check", utils::errno_code(ENODEV));
    }
    // Chunks a failed leg write left unsynced (while the secondary stays in service) are
    // resynced without waiting for an operator.
    for (auto& img : table_.snapshot()) {
      if (img->secondary_ok() && !img->bitmap()->failed() && img->bitmap()->stats().unsynced_chunks > 0 &&
          !resync_.running(img))
        resync_.queue(img, SyncAction::resync);
      img->note_write_behind_lag();  // LagExceeded (core/events.hpp)
    }
    if (trim_) trim_();
    if (std::chrono::steady_clock::now() < next_sweep) continue;
    next_sweep = std::chrono::steady_clock::now() + period;
    sweep_all();
  }
}

void Sweeper::sweep_all() {
  for (auto& img : table_.snapshot())
    if (auto ec = img->sweep()) spdlog::error("{}: bitmap sweep failed: {}", img->name(), ec.message());
}

}  // namespace fusemirror::core
