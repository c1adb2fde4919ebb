#include "core/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/filesystem.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/bitmap_format.hpp"
#include "core/nbd_leg.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
#include "utils/meta_file.hpp"
#include "utils/printable.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

using nlohmann::json;
using utils::Error;

std::string Config::bitmap_root() const {
  return bitmap_dir ? *bitmap_dir : meta_dir(primary) + "/" + kBitmapsDirName;
}

std::string check_chunk_size(std::uint64_t v) {
  if (!utils::is_power_of_two(v) || v < kMinChunkSize || v > kMaxChunkSize)
    return "must be a power of two between 4 KiB and 1 GiB (got " + std::to_string(v) + ")";
  return {};
}

std::string check_leg_write_piece(std::uint64_t v) {
  if (v != 0 && (!utils::is_power_of_two(v) || v < 4096 || v > (1ull << 30)))
    return "must be 0 (each write whole) or a power of two between 4 KiB and 1 GiB (got " + std::to_string(v) + ")";
  return {};
}

std::string check_direct_write_max(std::uint64_t v) {
  if (v % 4096 != 0 || v > (1u << 20))
    return "must be 0 (off) or a multiple of 4 KiB up to 1 MiB, the largest FUSE write (got " +
           std::to_string(v) + ")";
  return {};
}

std::string check_al_extents(std::uint64_t v) {
  if (v > 65536) return "must be at most 65536 (0 turns the activity log off; got " + std::to_string(v) + ")";
  return {};
}

std::string check_al_extent_size(std::uint64_t v, std::uint64_t chunk_size) {
  if (!utils::is_power_of_two(v) || v < kMinChunkSize || v > kMaxChunkSize)
    return "must be a power of two between 4 KiB and 1 GiB (got " + std::to_string(v) + ")";
  if (v < chunk_size)
    return "must not be smaller than chunk_size (" + std::to_string(chunk_size) + "): an extent is whole chunks (got " +
           std::to_string(v) + ")";
  return {};
}

std::string check_link_times(double timeout, double reconnect_min, double reconnect_max) {
  // NaN fails every comparison: each test is written so that it is refused.
  if (!(timeout >= 1 && timeout <= 3600)) return "secondary_timeout: must be between 1 and 3600 seconds";
  if (!(reconnect_min == 0 || (reconnect_min >= 0.1 && reconnect_min <= 3600)))
    return "reconnect_min: must be 0 (no automatic reconnect) or between 0.1 and 3600 seconds";
  if (!(reconnect_max >= reconnect_min && reconnect_max <= 86400))
    return "reconnect_max: must be between reconnect_min and 86400 seconds";
  return {};
}

std::string check_daemon_sleep(double v) {
  // The bitmap header keeps it as whole milliseconds (daemon_sleep_ms, a u32): below 1 ms it
  // would be stored as 0, "clear at once", which no operator asked for.
  if (!std::isfinite(v) || v < 0.001 || v > 3600)
    return "must be a number of seconds between 0.001 (1 ms, the bitmap header's unit) and 3600";
  return {};
}

std::string check_resync_rates(std::uint64_t min_rate, std::uint64_t max_rate) {
  if (max_rate != 0 && min_rate > max_rate)
    return "the minimum resync rate (" + std::to_string(min_rate) +
           " bytes/s) must not exceed the maximum (" + std::to_string(max_rate) + " bytes/s; 0 = unlimited)";
  return {};
}

std::string check_max_image_size(std::uint64_t v) {
  if (v < (1ull << 20) || v > kMaxSyncSize)
    return "must be between 1 MiB and 8 EiB - 1 (9223372036854775807) bytes (got " + std::to_string(v) + ")";
  return {};
}

std::string check_scrub_interval(double v) {
  if (!std::isfinite(v) || v < 0 || (v > 0 && v < 1) || v > 315360000)
    return "must be 0 (off) or a number of seconds between 1 and 315360000 (10 years)";
  return {};
}

std::string check_max_lag_bytes(std::uint64_t v) {
  // Below the largest write the mount passes (FUSE's 1 MiB) every write would go alone.
  if (v != 0 && (v < (1ull << 20) || v > (1ull << 40)))
    return "must be 0 (unbounded) or between 1 MiB (1048576, the largest write) and 1 TiB (got " + std::to_string(v) +
           ")";
  return {};
}

std::string check_max_lag_seconds(double v) {
  if (!std::isfinite(v) || v < 0 || (v > 0 && v < 0.01) || v > 86400)
    return "must be 0 (unbounded) or a number of seconds between 0.01 and 86400";
  return {};
}

namespace {

[[noreturn]] void bad(const std::string& source, const std::string& key, const std::string& why) {
  // One line whatever the file holds: a key or a value may contain control characters.
  throw Error("config " + utils::printable(source) + ": key '" + utils::printable(key) + "': " + utils::printable(why));
}

std::uint64_t get_uint(const json& j, const std::string& key, const std::string& source) {
  const json& v = j.at(key);
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer()) bad(source, key, "must not be negative");
  if (v.is_string()) {
    auto s = utils::parse_size(v.get<std::string>());
    if (!s) bad(source, key, "'" + v.get<std::string>() + "' is not a size (e.g. 65536 or \"64K\")");
    return *s;
  }
  bad(source, key, "must be a non-negative integer");
}

std::string get_abs_path(const json& j, const std::string& key, const std::string& source) {
  const json& v = j.at(key);
  if (!v.is_string()) bad(source, key, "must be a string");
  std::string s = v.get<std::string>();
  if (s.empty() || s[0] != '/') bad(source, key, "must be an absolute path (got '" + s + "')");
  return s;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error("config " + utils::printable(source) + ": not valid JSON: " + utils::printable(e.what()));
  }
  if (!j.is_object()) throw Error("config " + utils::printable(source) + ": must be a JSON object");
  static const std::set<std::string> kKeys = {
      "format", "uuid", "primary", "secondary", "chunk_size", "daemon_sleep", "bitmap_dir",
      "bitmap", "write_behind", "role", "resync_min_rate", "resync_max_rate",
      "fsync_waits_for_secondary", "drain_timeout", "intent_ahead", "max_image_size",
      "max_open_images", "checksums", "verify_reads", "direct_reads", "scrub_interval", "scrub_repair",
      "al_extents", "al_extent_size", "max_lag_bytes", "max_lag_seconds", "secondary_timeout", "reconnect_min",
      "reconnect_max", "leg_write_piece", "direct_write_max", "direct_write_inflight"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKeys.count(it.key())) bad(source, it.key(), "unknown key");
  for (const char* k : {"format", "uuid", "primary", "secondary"})
    if (!j.contains(k)) bad(source, k, "missing");

  Config c;
  // Compared as the JSON number it is: get<int>() would read 4294967297 as 1.
  if (!j["format"].is_number_unsigned() || j["format"].get<std::uint64_t>() != 1)
    bad(source, "format", "unsupported config format (this fusemirror reads format 1)");
  if (!j["uuid"].is_string()) bad(source, "uuid", "must be a string");
  auto u = utils::parse_uuid(j["uuid"].get<std::string>());
  if (!u || utils::is_nil(*u)) bad(source, "uuid", "not a UUID");
  c.uuid = *u;
  c.primary = get_abs_path(j, "primary", source);
  if (j["secondary"].is_string() && is_nbd_uri(j["secondary"].get<std::string>())) {
    c.secondary = j["secondary"].get<std::string>();
    try {
      (void)parse_nbd_uri(c.secondary);
    } catch (const Error& e) {
      bad(source, "secondary", e.what());
    }
  } else {
    c.secondary = get_abs_path(j, "secondary", source);
  }
  if (j.contains("chunk_size")) {
    c.chunk_size = get_uint(j, "chunk_size", source);
    if (auto why = check_chunk_size(c.chunk_size); !why.empty()) bad(source, "chunk_size", why);
  }
  if (j.contains("daemon_sleep")) {
    if (!j["daemon_sleep"].is_number()) bad(source, "daemon_sleep", "must be a number of seconds");
    c.daemon_sleep = j["daemon_sleep"].get<double>();
    if (auto why = check_daemon_sleep(c.daemon_sleep); !why.empty()) bad(source, "daemon_sleep", why);
  }
  if (j.contains("bitmap_dir") && !j["bitmap_dir"].is_null())
    c.bitmap_dir = get_abs_path(j, "bitmap_dir", source);
  if (j.contains("bitmap")) {
    if (!j["bitmap"].is_boolean()) bad(source, "bitmap", "must be true or false");
    c.bitmap = j["bitmap"].get<bool>();
  }
  if (j.contains("write_behind")) {
    auto v = get_uint(j, "write_behind", source);
    if (v > 16383) bad(source, "write_behind", "must be between 0 and 16383 (md's limit)");
    c.write_behind = static_cast<std::uint32_t>(v);
  }
  if (j.contains("role")) {
    if (!j["role"].is_string()) bad(source, "role", "must be \"mirror\" or \"backup\"");
    auto r = j["role"].get<std::string>();
    if (r == "mirror") c.role = Role::mirror;
    else if (r == "backup") c.role = Role::backup;
    else bad(source, "role", "must be \"mirror\" or \"backup\" (got '" + r + "')");
  }
  if (j.contains("fsync_waits_for_secondary")) {
    if (!j["fsync_waits_for_secondary"].is_boolean())
      bad(source, "fsync_waits_for_secondary", "must be true or false");
    c.fsync_waits_for_secondary = j["fsync_waits_for_secondary"].get<bool>();
  }
  if (j.contains("drain_timeout")) {
    if (!j["drain_timeout"].is_number() || j["drain_timeout"].get<double>() < 0 ||
        j["drain_timeout"].get<double>() > 86400)
      bad(source, "drain_timeout", "must be a number of seconds between 0 and 86400");
    c.drain_timeout = j["drain_timeout"].get<double>();
  }
  if (j.contains("max_lag_bytes")) {
    c.max_lag_bytes = get_uint(j, "max_lag_bytes", source);
    if (auto why = check_max_lag_bytes(c.max_lag_bytes); !why.empty()) bad(source, "max_lag_bytes", why);
  }
  if (j.contains("max_lag_seconds")) {
    if (!j["max_lag_seconds"].is_number()) bad(source, "max_lag_seconds", "must be a number of seconds");
    c.max_lag_seconds = j["max_lag_seconds"].get<double>();
    if (auto why = check_max_lag_seconds(c.max_lag_seconds); !why.empty()) bad(source, "max_lag_seconds", why);
  }
  if (j.contains("intent_ahead")) {
    c.intent_ahead = get_uint(j, "intent_ahead", source);
    if (c.intent_ahead > (1ull << 30)) bad(source, "intent_ahead", "must be at most 1 GiB (1073741824 bytes)");
  }
  if (j.contains("al_extents")) {
    c.al_extents = get_uint(j, "al_extents", source);
    if (auto why = check_al_extents(c.al_extents); !why.empty()) bad(source, "al_extents", why);
  }
  // Unset, it is 4 MiB or the chunk size when that is larger (an extent is one chunk then;
  // Bitmap::open does the same for a bitmap rescaled to larger chunks).
  if (j.contains("al_extent_size")) {
    c.al_extent_size = get_uint(j, "al_extent_size", source);
    if (auto why = check_al_extent_size(c.al_extent_size, c.chunk_size); !why.empty())
      bad(source, "al_extent_size", why);
  } else {
    c.al_extent_size = std::max(c.al_extent_size, c.chunk_size);
  }
  if (j.contains("max_image_size")) {
    c.max_image_size = get_uint(j, "max_image_size", source);
    if (auto why = check_max_image_size(c.max_image_size); !why.empty()) bad(source, "max_image_size", why);
  }
  if (j.contains("leg_write_piece")) {
    c.leg_write_piece = get_uint(j, "leg_write_piece", source);
    if (auto why = check_leg_write_piece(c.leg_write_piece); !why.empty()) bad(source, "leg_write_piece", why);
  }
  if (j.contains("direct_write_max")) {
    c.direct_write_max = get_uint(j, "direct_write_max", source);
    if (auto why = check_direct_write_max(c.direct_write_max); !why.empty()) bad(source, "direct_write_max", why);
  }
  if (j.contains("direct_write_inflight")) {
    const std::uint64_t v = get_uint(j, "direct_write_inflight", source);
    if (v < 1 || v > 1024) bad(source, "direct_write_inflight", "must be 1 (every direct-sized write) to 1024");
    c.direct_write_inflight = static_cast<std::uint32_t>(v);
  }
  if (j.contains("max_open_images")) {
    c.max_open_images = get_uint(j, "max_open_images", source);
    if (c.max_open_images > (1ull << 24))
      bad(source, "max_open_images", "must be 0 (from the descriptor limit) or at most 16777216");
  }
  for (const auto& [k, dst] : {std::pair<const char*, bool*>{"checksums", &c.checksums},
                                {"verify_reads", &c.verify_reads}, {"scrub_repair", &c.scrub_repair},
                                {"direct_reads", &c.direct_reads}}) {
    if (!j.contains(k)) continue;
    if (!j[k].is_boolean()) bad(source, k, "must be true or false");
    *dst = j[k].get<bool>();
  }
  if (c.verify_reads && !c.checksums) bad(source, "verify_reads", "needs checksums (\"checksums\": true)");
  if (j.contains("scrub_interval")) {
    if (!j["scrub_interval"].is_number()) bad(source, "scrub_interval", "must be a number of seconds");
    c.scrub_interval = j["scrub_interval"].get<double>();
    if (auto why = check_scrub_interval(c.scrub_interval); !why.empty()) bad(source, "scrub_interval", why);
  }
  for (const auto& [k, dst] : {std::pair<const char*, double*>{"secondary_timeout", &c.secondary_timeout},
                                {"reconnect_min", &c.reconnect_min}, {"reconnect_max", &c.reconnect_max}}) {
    if (!j.contains(k)) continue;
    if (!j[k].is_number()) bad(source, k, "must be a number of seconds");
    *dst = j[k].get<double>();
  }
  if (auto why = check_link_times(c.secondary_timeout, c.reconnect_min, c.reconnect_max); !why.empty())
    bad(source, why.substr(0, why.find(':')), why.substr(why.find(':') + 2));
  if (j.contains("resync_min_rate")) c.resync_min_rate = get_uint(j, "resync_min_rate", source);
  if (j.contains("resync_max_rate")) c.resync_max_rate = get_uint(j, "resync_max_rate", source);
  if (auto why = check_resync_rates(c.resync_min_rate, c.resync_max_rate); !why.empty())
    bad(source, "resync_min_rate", "must not exceed resync_max_rate: " + why);
  if (c.primary == c.secondary) bad(source, "secondary", "is the same directory as the primary");
  return c;
}

std::string dump_config(const Config& c) {
  json j;
  j["format"] = c.format;
  j["uuid"] = utils::to_string(c.uuid);
  j["primary"] = c.primary;
  j["secondary"] = c.secondary;
  j["chunk_size"] = c.chunk_size;
  j["daemon_sleep"] = c.daemon_sleep;
  j["bitmap_dir"] = c.bitmap_dir ? json(*c.bitmap_dir) : json(nullptr);
  j["bitmap"] = c.bitmap;
  j["write_behind"] = c.write_behind;
  j["role"] = c.role == Role::mirror ? "mirror" : "backup";
  j["resync_min_rate"] = c.resync_min_rate;
  j["resync_max_rate"] = c.resync_max_rate;
  j["fsync_waits_for_secondary"] = c.fsync_waits_for_secondary;
  j["drain_timeout"] = c.drain_timeout;
  j["max_lag_bytes"] = c.max_lag_bytes;
  j["max_lag_seconds"] = c.max_lag_seconds;
  j["intent_ahead"] = c.intent_ahead;
  j["al_extents"] = c.al_extents;
  // A Config built in code (create) keeps the 4 MiB default whatever its chunk size: an
  // extent is at least one chunk, and the file must parse again.
  j["al_extent_size"] = std::max(c.al_extent_size, c.chunk_size);
  j["max_image_size"] = c.max_image_size;
  j["leg_write_piece"] = c.leg_write_piece;
  j["direct_write_max"] = c.direct_write_max;
  j["direct_write_inflight"] = c.direct_write_inflight;
  j["max_open_images"] = c.max_open_images;
  j["checksums"] = c.checksums;
  j["verify_reads"] = c.verify_reads;
  j["direct_reads"] = c.direct_reads;
  j["scrub_interval"] = c.scrub_interval;
  j["scrub_repair"] = c.scrub_repair;
  j["secondary_timeout"] = c.secondary_timeout;
  j["reconnect_min"] = c.reconnect_min;
  j["reconnect_max"] = c.reconnect_max;
  return j.dump(2) + "\n";
}

Config load_config(const std::string& path, std::string* config_path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw utils::sys_error(path, "cannot read", errno);
  std::string file;
  if (S_ISDIR(st.st_mode)) {
    file = path + "/" + kMetaDirName + "/" + kConfigName;
    struct stat fst {};
    if (::lstat(file.c_str(), &fst) != 0 && errno == ENOENT)
      throw Error(path + ": not a fusemirror primary (no " + kMetaDirName + "/" + kConfigName +
                  "; run 'fusemirror create' first)");
  } else {
    // A config file named by the operator: symlinks in that path are the operator's choice.
    char* real = ::realpath(path.c_str(), nullptr);
    if (!real) throw utils::sys_error(path, "cannot read", errno);
    file = real;
    std::free(real);
  }
  // PRIMARY/.fusemirror and config.json themselves are never followed if symlinks; a FIFO,
  // device, hard link or oversized file is refused (utils/meta_file.hpp).
  std::string text = utils::read_meta_file(file);
  if (config_path) *config_path = file;
  return parse_config(text, file);
}

namespace {

std::string canonical_dir(const std::string& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw utils::sys_error(path, std::string(what) + " directory", errno);
  if (!S_ISDIR(st.st_mode)) throw Error(path + ": " + what + " is not a directory");
  boost::system::error_code ec;
  auto c = boost::filesystem::canonical(path, ec);
  if (ec) throw Error(path + ": cannot resolve the " + what + " directory: " + ec.message());
  return c.string();
}

bool is_within(const std::string& inner, const std::string& outer) {
  return inner == outer || inner.rfind(outer == "/" ? outer : outer + "/", 0) == 0;
}

// A metadata directory that exists must be a real directory (lstat: never followed).
void check_meta_dir(const std::string& path, const char* what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // created later, with O_NOFOLLOW checks
  if (S_ISLNK(st.st_mode))
    throw Error(path + ": the " + what + " is a symbolic link; refusing (fusemirror's metadata must stay "
                "in the set's own directories: replace it with a real directory)");
  if (!S_ISDIR(st.st_mode)) throw Error(path + ": the " + what + " is not a directory; refusing");
}

}  // namespace

bool Config::secondary_is_nbd() const { return is_nbd_uri(secondary); }

void check_set_directories(const Config& c) {
  if (c.secondary_is_nbd()) {
    // No secondary directory: the primary's and the bitmap directory's rules only.
    (void)parse_nbd_uri(c.secondary);
    const std::string primary = canonical_dir(c.primary, "primary");
    check_meta_dir(c.primary + "/" + kMetaDirName, "primary's metadata directory");
    if (c.bitmap_dir) {
      boost::system::error_code ec;
      const std::string bdir = boost::filesystem::weakly_canonical(*c.bitmap_dir, ec).string();
      if (ec) throw Error(*c.bitmap_dir + ": cannot resolve the bitmap directory: " + ec.message());
      if (is_within(bdir, primary) && !is_within(bdir, primary + "/" + kMetaDirName))
        throw Error(*c.bitmap_dir + ": the bitmap directory must not be inside the primary (outside its " +
                    kMetaDirName + ")");
    }
    return;
  }
  const std::string primary = canonical_dir(c.primary, "primary");
  const std::string secondary = canonical_dir(c.secondary, "secondary");
  if (primary == secondary)
    throw Error(c.secondary + ": is the same directory as the primary (" + primary + ")");
  if (is_within(secondary, primary) || is_within(primary, secondary))
    throw Error(c.secondary + ": primary and secondary must not contain each other (" + primary + ", " +
                secondary + ")");
  const std::string pmeta = primary + "/" + kMetaDirName, smeta = secondary + "/" + kMetaDirName;
  check_meta_dir(c.primary + "/" + kMetaDirName, "primary's metadata directory");
  check_meta_dir(c.secondary + "/" + kMetaDirName, "secondary's metadata directory");
  check_meta_dir(c.secondary + "/" + kMetaDirName + "/images", "secondary's record directory");
  if (c.bitmap_dir) {
    // The bitmap directory may not exist yet (a mount creates it): resolve what does.
    boost::system::error_code ec;
    const std::string bdir = boost::filesystem::weakly_canonical(*c.bitmap_dir, ec).string();
    if (ec) throw Error(*c.bitmap_dir + ": cannot resolve the bitmap directory: " + ec.message());
    if (is_within(bdir, secondary))
      throw Error(*c.bitmap_dir + ": the bitmap directory must not be inside the secondary");
    if (is_within(bdir, primary) && !is_within(bdir, pmeta))
      throw Error(*c.bitmap_dir + ": the bitmap directory must not be inside the primary outside its " +
                  kMetaDirName + " (its bitmaps would show as images)");
  }
  check_meta_dir(c.bitmap_root(), "bitmap directory");
}

std::string dump_member(const Member& m) {
  json j;
  j["format"] = 1;
  j["set_uuid"] = utils::to_string(m.set_uuid);
  return j.dump(2) + "\n";
}

Member parse_member(const std::string& text, const std::string& source) {
  try {
    json j = json::parse(text);
    auto u = utils::parse_uuid(j.at("set_uuid").get<std::string>());
    if (!u) throw Error(utils::printable(source) + ": set_uuid is not a UUID");
    return Member{*u};
  } catch (const json::exception& e) {
    throw Error(utils::printable(source) + ": not a fusemirror membership record: " + utils::printable(e.what()));
  }
}

Member load_member(const std::string& path) { return parse_member(utils::read_meta_file(path), path); }

void write_file_atomic(const std::string& dir, const std::string& name, const std::string& content) {
  utils::UniqueFd d = utils::open_dir_nofollow(dir, "metadata directory");
  utils::write_file_atomic_at(d.get(), dir, name, content);
}

}  // namespace fusemirror::core
