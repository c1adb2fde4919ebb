// core/config.hpp — the mirror set's JSON config: identity and tunables.
//
// Every key is documented in docs/config.md. Unknown keys and bad values are rejected
// with a one-line error naming the key and the reason (utils::Error).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/layout.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

enum class Role { mirror, backup };

struct Config {
  int format = 1;
  utils::Uuid uuid{};
  std::string primary;    // absolute
  std::string secondary;  // absolute
  std::uint64_t chunk_size = 65536;
  double daemon_sleep = 5.0;               // seconds
  std::optional<std::string> bitmap_dir;   // absolute; default PRIMARY/.fusemirror/bitmaps
  bool bitmap = true;                      // false: md's --bitmap=none
  std::uint32_t write_behind = 0;          // max outstanding secondary writes; 0 = synchronous
  Role role = Role::mirror;                // backup: never read from the secondary
  bool fsync_waits_for_secondary = false;  // write-behind: fsync also drains + syncs the secondary
  double drain_timeout = 60.0;             // seconds unmount waits for the write-behind queue
  std::uint64_t resync_min_rate = 1 << 20;  // bytes/s
  std::uint64_t resync_max_rate = 0;        // bytes/s; 0 = unlimited
  std::uint64_t intent_ahead = 16 << 20;    // bytes marked dirty ahead of a sequential stream
  std::uint64_t max_image_size = 16ull << 40;  // bytes; larger sizes are refused with EFBIG

  std::string bitmap_root() const;  // the directory holding the bitmaps
};

// Parses and validates; throws utils::Error("config FILE: key 'K': reason").
Config parse_config(const std::string& json_text, const std::string& source);
std::string dump_config(const Config& c);
// Reads PATH (a config file, or a primary directory holding .fusemirror/config.json).
Config load_config(const std::string& path, std::string* config_path = nullptr);

// Validators shared by the CLI and the parser; each returns an empty string when valid.
std::string check_chunk_size(std::uint64_t v);
std::string check_daemon_sleep(double v);
std::string check_max_image_size(std::uint64_t v);

// The secondary's membership record.
struct Member {
  utils::Uuid set_uuid{};
};
std::string dump_member(const Member& m);
Member parse_member(const std::string& json_text, const std::string& source);
// Reads and parses the membership record at `path`; throws utils::Error naming it.
Member load_member(const std::string& path);

// Writes `content` to DIR/NAME durably and atomically, mode 0600: temp file in DIR ->
// fsync -> rename over NAME -> fsync DIR (LevelDB's SetCurrentFile). A crash leaves either
// the old file or the new one, never a mix.
void write_file_atomic(const std::string& dir, const std::string& name, const std::string& content);

}  // namespace fusemirror::core
