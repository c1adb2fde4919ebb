// core/records.hpp — what the secondary knows about itself: its membership of the set
// (member.json) and, per image, the record of the bitmap events at which its copy was last
// known complete (md's per-device event count), SECONDARY/.fusemirror/images/REL.json.
//
// The coverage proof (docs/on-disk-format.md "Trust rules"): a secondary copy may get a
// bitmap-only resync only when its record proves the bitmap covers everything the copy may
// lack; otherwise a full resync. why_not_covered() decides it from plain facts, so that
// unit tests can try every case without a mount.
//
// Thread safety: reads and writes of different images may run concurrently; a write and a
// rename of the same image are serialised by the namespace lock (core/namespace.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include "core/leg.hpp"
#include "core/legs.hpp"
#include "utils/result.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

// The secondary file as the set left it at a clean shutdown.
struct FileIdentity {
  std::uint64_t ino = 0, size = 0;
  std::int64_t mtime_ns = 0;
  static FileIdentity of(const struct stat& st);
  friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};

struct LegRecord {
  utils::Uuid set_uuid{}, image_uuid{};
  std::uint64_t events = 0;
  bool clean = false;
  std::optional<FileIdentity> file;  // written at a clean shutdown only
};

// What the coverage proof looks at besides the record.
struct CoverageFacts {
  utils::Uuid set_uuid{};
  utils::Uuid image_uuid{};             // the bitmap's
  std::uint64_t bitmap_events = 0;      // the events the bitmap recorded before this session
  std::uint64_t events_cleared = 0;     // the bitmap's
  std::optional<FileIdentity> secondary_file;  // the copy as found now
};

// Empty when the record proves the bitmap covers everything the secondary copy may lack;
// otherwise the reason, for the log. `record`: ENOENT when there is none, EBADMSG when it
// does not parse.
std::string why_not_covered(const utils::Result<LegRecord>& record, const CoverageFacts& facts);

class SecondaryRecords {
 public:
  SecondaryRecords(const Legs& legs, const utils::Uuid& set_uuid) : legs_(legs), set_uuid_(set_uuid) {}

  // ENOENT: no record; EBADMSG: a record that does not parse (logged with the reason).
  // A leg that keeps its own record (an NBD export) is asked instead of the directory.
  utils::Result<LegRecord> read(const std::string& rel, Leg* leg = nullptr) const;
  // Records that the secondary's copy of REL is complete up to `events`; with `clean`
  // (clean shutdown), the identity of the file `leg` too. A leg that keeps its own record
  // gets it written there. Durable when it returns.
  std::error_code write(const std::string& rel, const utils::Uuid& image_uuid, std::uint64_t events,
                        bool clean = false, Leg* leg = nullptr);
  // Removes REL's record (none for an NBD set: its records follow the exports). Durable when it returns (the directory is fsync'ed): a record
  // that a power cut could bring back would vouch for whatever a later life of the name
  // puts there (docs/write-path.md §2b). ENOENT is success.
  std::error_code remove(const std::string& rel);
  // The records follow their images (a directory's whole subtree when `is_dir`). Durable
  // when it returns without error.
  std::error_code rename(const std::string& from, const std::string& to, bool is_dir);

 private:
  const Legs& legs_;
  const utils::Uuid set_uuid_;
};

// Throws utils::Error unless SECONDARY/.fusemirror/member.json names set `set_uuid`.
void require_member(const std::string& secondary, const utils::Uuid& set_uuid);

}  // namespace fusemirror::core
