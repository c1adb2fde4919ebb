#include "core/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/bitmap_format.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
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

std::string check_daemon_sleep(double v) {
  if (!std::isfinite(v) || v <= 0 || v > 3600)
    return "must be a number of seconds greater than 0 and at most 3600";
  return {};
}

std::string check_max_image_size(std::uint64_t v) {
  if (v < (1ull << 20) || v > kMaxSyncSize)
    return "must be between 1 MiB and 8 EiB - 1 (9223372036854775807) bytes (got " + std::to_string(v) + ")";
  return {};
}

namespace {

[[noreturn]] void bad(const std::string& source, const std::string& key, const std::string& why) {
  throw Error("config " + source + ": key '" + key + "': " + why);
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
    throw Error("config " + source + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error("config " + source + ": must be a JSON object");
  static const std::set<std::string> kKeys = {
      "format", "uuid", "primary", "secondary", "chunk_size", "daemon_sleep", "bitmap_dir",
      "bitmap", "write_behind", "role", "resync_min_rate", "resync_max_rate",
      "fsync_waits_for_secondary", "drain_timeout", "intent_ahead", "max_image_size"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKeys.count(it.key())) bad(source, it.key(), "unknown key");
  for (const char* k : {"format", "uuid", "primary", "secondary"})
    if (!j.contains(k)) bad(source, k, "missing");

  Config c;
  if (!j["format"].is_number_integer() || j["format"].get<int>() != 1)
    bad(source, "format", "unsupported config format (this fusemirror reads format 1)");
  if (!j["uuid"].is_string()) bad(source, "uuid", "must be a string");
  auto u = utils::parse_uuid(j["uuid"].get<std::string>());
  if (!u || utils::is_nil(*u)) bad(source, "uuid", "not a UUID");
  c.uuid = *u;
  c.primary = get_abs_path(j, "primary", source);
  c.secondary = get_abs_path(j, "secondary", source);
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
  if (j.contains("intent_ahead")) {
    c.intent_ahead = get_uint(j, "intent_ahead", source);
    if (c.intent_ahead > (1ull << 30)) bad(source, "intent_ahead", "must be at most 1 GiB (1073741824 bytes)");
  }
  if (j.contains("max_image_size")) {
    c.max_image_size = get_uint(j, "max_image_size", source);
    if (auto why = check_max_image_size(c.max_image_size); !why.empty()) bad(source, "max_image_size", why);
  }
  if (j.contains("resync_min_rate")) c.resync_min_rate = get_uint(j, "resync_min_rate", source);
  if (j.contains("resync_max_rate")) c.resync_max_rate = get_uint(j, "resync_max_rate", source);
  if (c.resync_max_rate && c.resync_min_rate > c.resync_max_rate)
    bad(source, "resync_min_rate", "must not exceed resync_max_rate");
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
  j["intent_ahead"] = c.intent_ahead;
  j["max_image_size"] = c.max_image_size;
  return j.dump(2) + "\n";
}

Config load_config(const std::string& path, std::string* config_path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw utils::sys_error(path, "cannot read", errno);
  std::string file = S_ISDIR(st.st_mode) ? path + "/" + kMetaDirName + "/" + kConfigName : path;
  std::ifstream in(file);
  if (!in) {
    if (S_ISDIR(st.st_mode))
      throw Error(path + ": not a fusemirror primary (no " + kMetaDirName + "/" + kConfigName +
                  "; run 'fusemirror create' first)");
    throw utils::sys_error(file, "cannot read", errno);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (config_path) *config_path = file;
  return parse_config(ss.str(), file);
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
    if (!u) throw Error(source + ": set_uuid is not a UUID");
    return Member{*u};
  } catch (const json::exception& e) {
    throw Error(source + ": not a fusemirror membership record: " + e.what());
  }
}

Member load_member(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_member(ss.str(), path);
}

void write_file_atomic(const std::string& dir, const std::string& name, const std::string& content) {
  const std::string tmp = dir + "/." + name + ".tmp";
  const std::string dst = dir + "/" + name;
  ::unlink(tmp.c_str());
  utils::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw utils::sys_error(tmp, "cannot create", errno);
  if (auto ec = utils::pwrite_all(fd.get(), std::as_bytes(std::span(content)), 0))
    throw utils::sys_error(tmp, "cannot write", ec.value());
  if (::fsync(fd.get()) != 0) throw utils::sys_error(tmp, "cannot fsync", errno);
  fd.reset();
  if (::rename(tmp.c_str(), dst.c_str()) != 0) throw utils::sys_error(dst, "cannot rename into place", errno);
  utils::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) throw utils::sys_error(dir, "cannot fsync directory", errno);
}

}  // namespace fusemirror::core
