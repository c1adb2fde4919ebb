// core/config.hpp — the mirror set's JSON config: identity and tunables.
//
// Every key is documented in docs/config.md. Unknown keys and bad values are rejected
// with a one-line error naming the key and the reason (utils::Error).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/layout.hpp"
#include "utils/meta_file.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

enum class Role { mirror, backup };

struct Config {
  int format = 1;
  utils::Uuid uuid{};
  std::string primary;    // absolute
  std::string secondary;  // absolute, or an NBD URI (secondary_is_nbd(); core/nbd_leg.hpp)
  std::uint64_t chunk_size = 65536;
  double daemon_sleep = 5.0;               // seconds
  std::optional<std::string> bitmap_dir;   // absolute; default PRIMARY/.fusemirror/bitmaps
  bool bitmap = true;                      // false: md's --bitmap=none
  std::uint32_t write_behind = 0;          // max outstanding secondary writes; 0 = synchronous
  Role role = Role::mirror;                // backup: never read from the secondary
  bool fsync_waits_for_secondary = false;  // write-behind: fsync also drains + syncs the secondary
  double drain_timeout = 60.0;             // seconds unmount waits for the write-behind queue
  // Write-behind's lag bound (the secondary's RPO): writers wait rather than let the
  // outstanding bytes pass max_lag_bytes, or while the oldest outstanding write is older
  // than max_lag_seconds. 0 = unbounded.
  std::uint64_t max_lag_bytes = 0;
  double max_lag_seconds = 0;
  std::uint64_t resync_min_rate = 1 << 20;  // bytes/s
  std::uint64_t resync_max_rate = 0;        // bytes/s; 0 = unlimited
  std::uint64_t intent_ahead = 16 << 20;    // bytes marked dirty ahead of a sequential stream
  // The bitmap's activity log (docs/write-path.md §3b): at most al_extents extents of
  // al_extent_size bytes are kept dirty while hot; 0 = off (md's rules alone).
  std::uint64_t al_extents = 1024;
  std::uint64_t al_extent_size = 4 << 20;
  std::uint64_t max_image_size = 16ull << 40;  // bytes; larger sizes are refused with EFBIG
  // Every buffered write of a leg's data (primary, file secondary) goes out in pieces of at
  // most this many bytes, aligned to it in the file; 0 = each write whole. Keeps the legs'
  // page-cache folios small (docs/performance.md "Large folios").
  std::uint64_t leg_write_piece = 64 << 10;
  // Aligned writes of at most this many bytes go to both legs with O_DIRECT, submitted
  // together (docs/write-path.md §1b); 0 = every write buffered.
  std::uint64_t direct_write_max = 1 << 20;
  std::uint32_t direct_write_inflight = 2;  // ... when at least this many writes are in flight
  // Images kept open at most (3 descriptors each; idle ones beyond are closed clean).
  // 0: as many as the descriptor limit allows (core/image_loader.hpp, budget_for).
  std::uint64_t max_open_images = 0;
  // Checksums of clean chunks (docs/write-path.md §9): a sidecar per image beside its bitmap.
  bool checksums = true;
  bool verify_reads = false;   // reads check the primary against the checksums (needs checksums)
  bool direct_reads = true;    // aligned reads the page cache lacks bypass it (O_DIRECT, §8a)
  double scrub_interval = 0;   // seconds between scheduled check passes per image; 0 = off
  bool scrub_repair = false;   // scheduled passes repair (else they only check)
  // The link to the secondary (docs/operations.md "replicating to another host"): an NBD
  // request or handshake that takes longer fails the leg (ETIMEDOUT); a secondary lost to
  // an error is reconnected by itself, retried after reconnect_min seconds, the wait
  // doubling up to reconnect_max; reconnect_min 0: never (the operator re-adds).
  double secondary_timeout = 30;
  double reconnect_min = 1;
  double reconnect_max = 60;

  std::string bitmap_root() const;  // the directory holding the bitmaps
  bool secondary_is_nbd() const;     // the secondary is an NBD server, not a directory
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
// leg_write_piece: 0 (each write whole) or a power of two from 4 KiB to 1 GiB.
std::string check_leg_write_piece(std::uint64_t v);
// direct_write_max: 0 (off) or a multiple of 4 KiB up to 1 MiB (the largest FUSE write).
std::string check_direct_write_max(std::uint64_t v);
std::string check_scrub_interval(double v);
// max_lag_bytes: 0 or 1 MiB (the largest FUSE write) .. 1 TiB; max_lag_seconds: 0 or
// 0.01 .. 86400.
std::string check_max_lag_bytes(std::uint64_t v);
std::string check_max_lag_seconds(double v);
// secondary_timeout: 1 to 3600 s. reconnect_min: 0 (off) or 0.1 to 3600 s; reconnect_max:
// from reconnect_min to 86400 s.
std::string check_link_times(double timeout, double reconnect_min, double reconnect_max);
// al_extents: at most 65536 (DRBD's bound is 65534). al_extent_size: a power of two between
// 4 KiB and 1 GiB, not smaller than the chunk size (so a multiple of it).
std::string check_al_extents(std::uint64_t v);
std::string check_al_extent_size(std::uint64_t v, std::uint64_t chunk_size);
// md's sync_speed_min must not exceed sync_speed_max (max 0 = unlimited). The one rule for
// the config (resync_min_rate/resync_max_rate) and the live control files.
std::string check_resync_rates(std::uint64_t min_rate, std::uint64_t max_rate);

// The layout rules of a set's directories, checked by `create` and by every mount
// (MirrorSet::open), so that a hand-edited config cannot get past them. Throws utils::Error:
//  - primary and secondary exist, are directories, are not the same one and do not contain
//    each other;
//  - a bitmap_dir is not inside the secondary, nor inside the primary outside its
//    .fusemirror (its bitmaps would show as images);
//  - the metadata directories (PRIMARY/.fusemirror, SECONDARY/.fusemirror,
//    SECONDARY/.fusemirror/images and the bitmap directory), where they exist, are real
//    directories, not symlinks.
void check_set_directories(const Config& c);

// The secondary's membership record.
struct Member {
  utils::Uuid set_uuid{};
};
std::string dump_member(const Member& m);
Member parse_member(const std::string& json_text, const std::string& source);
// Reads and parses the membership record at `path`; throws utils::Error naming it. Like
// load_config, refuses a symlinked metadata directory, and a member.json that is a symlink,
// a FIFO or device, a hard link or larger than 1 MiB.
Member load_member(const std::string& path);

// Writes `content` to DIR/NAME durably and atomically, mode 0600: temp file in DIR ->
// fsync -> rename over NAME -> fsync DIR (LevelDB's SetCurrentFile). A crash leaves either
// the old file or the new one, never a mix. DIR is opened once with O_NOFOLLOW (a symlinked
// last component is refused) and everything after happens beneath that descriptor
// (utils::write_file_atomic_at).
void write_file_atomic(const std::string& dir, const std::string& name, const std::string& content);

}  // namespace fusemirror::core
