#include "fusemirror/cli.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/bitmap.hpp"
#include "core/bitmap_format.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
#include "utils/size.hpp"

namespace fusemirror::cli {

using utils::Error;

namespace {

// mountinfo escapes spaces etc. as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() + 0 && i + 3 <= s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string read_status_file(const std::string& mountpoint) {
  const std::string path = mountpoint + "/.fusemirror/status.json";
  std::ifstream in(path);
  if (!in) throw Error(mountpoint + ": not a fusemirror mount (cannot read " + path + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string bar(double frac) {
  const int width = 20;
  int full = static_cast<int>(frac * width);
  std::string s = "[";
  for (int i = 0; i < width; ++i) s += i < full ? '=' : (i == full ? '>' : '.');
  return s + "]";
}

}  // namespace

std::vector<std::string> fusemirror_mounts() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ... mountpoint(5th) ... " - " fstype source options
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string f1, f2, f3, f4, mp, fstype;
    pre >> f1 >> f2 >> f3 >> f4 >> mp;
    post >> fstype;
    if (fstype == "fuse.fusemirror") out.push_back(unescape(mp));
  }
  return out;
}

int examine_bitmap(const std::string& file) {
  utils::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw utils::sys_error(file, "cannot open", errno);
  struct stat st {};
  ::fstat(fd.get(), &st);
  std::array<std::byte, core::kHeaderSize> raw{};
  auto got = utils::pread_all(fd.get(), raw, 0);
  if (!got) throw utils::sys_error(file, "cannot read", got.error().value());
  auto h = core::decode_header(std::span(raw.data(), *got));
  if (!h) throw Error(file + ": " + h.error().message());
  const std::uint64_t bits = h->bit_count();
  const auto have = static_cast<std::uint64_t>(st.st_size) - std::min<std::uint64_t>(st.st_size, core::kHeaderSize);
  if (have < (bits + 7) / 8)
    throw Error(file + ": bits truncated (the header covers " + std::to_string(bits) + " chunks, the file holds " +
                std::to_string(have * 8) + " bits); a mount treats this bitmap as all dirty");
  std::vector<std::byte> data(core::bits_bytes(bits));
  auto r = utils::pread_all(fd.get(), data, core::kHeaderSize);
  if (!r) throw utils::sys_error(file, "cannot read the bits", r.error().value());
  const bool truncated = *r < (bits + 7) / 8;
  std::uint64_t dirty = 0;
  for (std::uint64_t c = 0; c < bits; ++c)
    if (c / 8 < *r && (static_cast<unsigned>(data[c / 8]) >> (c % 8)) & 1) ++dirty;
  std::printf("        Filename : %s\n", file.c_str());
  std::printf("           Magic : FMBITMAP\n");
  std::printf("         Version : %u.%u\n", h->version_major, h->version_minor);
  std::printf("            UUID : %s\n", utils::to_string(h->set_uuid).c_str());
  std::printf("      Image UUID : %s\n", utils::to_string(h->image_uuid).c_str());
  std::printf("          Events : %llu\n", static_cast<unsigned long long>(h->events));
  std::printf("  Events Cleared : %llu\n", static_cast<unsigned long long>(h->events_cleared));
  std::printf("           State : %s\n", core::state_string(h->state).c_str());
  std::printf("       Chunksize : %s\n", utils::format_size(h->chunk_size).c_str());
  std::printf("    Daemon sleep : %gs\n", h->daemon_sleep_ms / 1000.0);
  if (h->write_behind)
    std::printf("      Write Mode : Allow write behind, max %u\n", h->write_behind);
  else
    std::printf("      Write Mode : Normal\n");
  std::printf("       Sync Size : %llu (%s)\n", static_cast<unsigned long long>(h->sync_size),
              utils::format_size(h->sync_size).c_str());
  std::printf("          Bitmap : %llu bits (chunks), %llu dirty (%.1f%%)%s\n",
              static_cast<unsigned long long>(bits), static_cast<unsigned long long>(dirty),
              bits ? 100.0 * static_cast<double>(dirty) / static_cast<double>(bits) : 0.0,
              truncated ? " [bits truncated]" : "");
  if (truncated)
    throw Error(file + ": bits truncated (" + std::to_string(*r) + " of " +
                std::to_string((bits + 7) / 8) + " bytes); a mount treats this bitmap as all dirty");
  return 0;
}

int status(const std::string& mountpoint, bool as_json) {
  std::vector<std::string> mps = mountpoint.empty() ? fusemirror_mounts() : std::vector{mountpoint};
  nlohmann::json all;
  all["sets"] = nlohmann::json::array();
  for (const auto& mp : mps) {
    std::string text;
    try {
      text = read_status_file(mp);
    } catch (const Error&) {
      if (!mountpoint.empty()) throw;
      continue;  // a mount that went away meanwhile
    }
    auto j = nlohmann::json::parse(text);
    j["mountpoint"] = mp;
    all["sets"].push_back(std::move(j));
  }
  if (as_json) {
    std::cout << all.dump(2) << "\n";
    return 0;
  }
  std::cout << "Personalities : [fusemirror-raid1]\n";
  for (const auto& s : all["sets"]) {
    std::cout << "set " << s["uuid"].get<std::string>() << " : mounted on "
              << s["mountpoint"].get<std::string>() << " (pid " << s["pid"] << ")\n"
              << "      primary " << s["primary"].get<std::string>() << ", secondary "
              << s["secondary"].get<std::string>() << "\n";
    for (const auto& i : s["images"]) {
      const bool ok = i["secondary_ok"].get<bool>();
      std::cout << "  " << i["name"].get<std::string>() << " : " << i["state"].get<std::string>()
                << " raid1 " << (ok ? "[UU]" : "[U_]") << " "
                << utils::format_size(i["size"].get<std::uint64_t>()) << "\n";
      std::cout << "      bitmap: " << i["dirty_chunks"] << "/" << i["total_chunks"]
                << " chunks dirty, " << utils::format_size(i["chunk_size"].get<std::uint64_t>())
                << " chunk, file: " << i["bitmap_file"].get<std::string>() << "\n";
      const auto& wb = i["write_behind"];
      if (wb["limit"].get<std::uint64_t>() > 0)
        std::cout << "      async: " << wb["outstanding"] << "/" << wb["limit"] << " outstanding writes\n";
      const auto& sy = i["sync"];
      if (sy["action"].get<std::string>() != "idle") {
        const double total = static_cast<double>(sy["total_bytes"].get<std::uint64_t>());
        const double done = static_cast<double>(sy["done_bytes"].get<std::uint64_t>());
        const double frac = total > 0 ? done / total : 0;
        char line[160];
        std::snprintf(line, sizeof line, "      %s  %s = %.1f%% (%s/%s)\n", bar(frac).c_str(),
                      sy["action"].get<std::string>().c_str(), frac * 100,
                      utils::format_size(static_cast<std::uint64_t>(done)).c_str(),
                      utils::format_size(static_cast<std::uint64_t>(total)).c_str());
        std::cout << line;
      }
    }
  }
  if (all["sets"].empty()) std::cout << "no fusemirror sets mounted\n";
  return 0;
}

int unmount(const std::string& mountpoint, double timeout_s) {
  auto j = nlohmann::json::parse(read_status_file(mountpoint));
  const pid_t pid = j["pid"].get<pid_t>();
  // fusermount3 works for the mount's owner without root; it is also what umount uses.
  pid_t child = ::fork();
  if (child == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "--", mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int wst = 0;
  ::waitpid(child, &wst, 0);
  if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0)
    throw Error(mountpoint + ": unmount failed (busy? a loop device or open file may still use it)");
  // Wait for the daemon to drain, flush its bitmaps and exit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  auto alive = [pid] {
    if (::kill(pid, 0) != 0) return false;
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string f1, f2, state;
    st >> f1 >> f2 >> state;  // a zombie has exited; only its parent has not reaped it
    return state != "Z";
  };
  while (alive()) {
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(mountpoint + ": unmounted, but daemon pid " + std::to_string(pid) +
                  " has not exited after " + std::to_string(static_cast<int>(timeout_s)) + "s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

int control(const std::string& mountpoint, const std::string& line) {
  (void)read_status_file(mountpoint);  // a clear error when it is not a fusemirror mount
  const std::string path = mountpoint + "/.fusemirror/control";
  utils::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw utils::sys_error(path, "cannot open the control file", errno);
  if (::write(fd.get(), line.data(), line.size()) < 0)
    throw Error(mountpoint + ": " + line + ": " + std::strerror(errno) +
                " (the daemon's log says why)");
  return 0;
}

}  // namespace fusemirror::cli
