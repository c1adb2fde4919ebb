#include "core/records.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "core/layout.hpp"
#include "utils/error.hpp"
#include "utils/meta_file.hpp"

namespace fusemirror::core {

FileIdentity FileIdentity::of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_ino), static_cast<std::uint64_t>(st.st_size),
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

std::string why_not_covered(const utils::Result<LegRecord>& record, const CoverageFacts& f) {
  if (!record) {
    if (record.error() == std::errc::no_such_file_or_directory)
      return "the secondary has no record of this image (new, foreign or restored copy)";
    return "the secondary's record of this image is unreadable (" + record.error().message() + ")";
  }
  const LegRecord& r = *record;
  if (r.set_uuid == f.set_uuid && r.events > f.bitmap_events)
    // md: "bitmap file is out of date ... forcing full recovery". The secondary saw a later
    // state of this set than the bitmap describes: an old bitmap was put back.
    return "the bitmap is older than the secondary's record (bitmap events " +
           std::to_string(f.bitmap_events) + " < record events " + std::to_string(r.events) + ")";
  if (r.set_uuid != f.set_uuid)
    return "the secondary's record belongs to another mirror set (" + utils::to_string(r.set_uuid) + ")";
  if (r.image_uuid != f.image_uuid)
    return "the secondary's copy belongs to another image (uuid " + utils::to_string(r.image_uuid) + ")";
  if (r.events < f.events_cleared)
    return "the secondary's copy is older than the bitmap (its events " + std::to_string(r.events) +
           " < events_cleared " + std::to_string(f.events_cleared) + ")";
  if (r.clean && r.file && f.secondary_file && !(*r.file == *f.secondary_file))
    return "the secondary's file is not the one this set left there at its last clean "
           "shutdown (inode, size or mtime changed: an old or foreign copy?)";
  return {};
}

utils::Result<LegRecord> SecondaryRecords::read(const std::string& rel, Leg* leg) const {
  if (leg && leg->keeps_record()) {
    std::string why;
    auto r = leg->read_record(&why);
    if (!r) {
      if (r.error() != std::errc::no_such_file_or_directory)
        spdlog::warn("{}: identity record not usable: {}", leg->describe(), why);
      return r.error();
    }
    return LegRecord{r->set_uuid, r->image_uuid, r->events, r->clean, {}};
  }
  if (legs_.remote()) return utils::errno_code(ENOENT);
  const std::string rrel = record_rel(rel);
  auto fd = legs_.secondary.open_beneath(rrel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  if (!fd) return fd.error();
  auto corrupt = [&](const std::string& why) -> utils::Result<LegRecord> {
    spdlog::warn("{}/{}: record not usable: {}", legs_.secondary.path(), rrel, why);
    return utils::errno_code(EBADMSG);
  };
  if (auto problem = utils::meta_file_problem(fd->get()); !problem.empty()) return corrupt(problem);
  std::string text(4096, '\0');
  ssize_t n = ::pread(fd->get(), text.data(), text.size(), 0);
  if (n < 0) return corrupt(std::strerror(errno));
  text.resize(static_cast<std::size_t>(n));
  try {
    auto j = nlohmann::json::parse(text);
    auto su = utils::parse_uuid(j.at("set_uuid").get<std::string>());
    auto iu = utils::parse_uuid(j.at("image_uuid").get<std::string>());
    if (!su || !iu) return corrupt("a uuid does not parse");
    LegRecord r;
    r.set_uuid = *su;
    r.image_uuid = *iu;
    r.events = j.at("events").get<std::uint64_t>();
    r.clean = j.value("clean", false);
    if (j.contains("ino"))
      r.file = FileIdentity{j.at("ino").get<std::uint64_t>(), j.value("size", std::uint64_t{0}),
                            j.value("mtime_ns", std::int64_t{0})};
    return r;
  } catch (const std::exception& e) {
    return corrupt(e.what());
  }
}

std::error_code SecondaryRecords::write(const std::string& rel, const utils::Uuid& image_uuid,
                                        std::uint64_t events, bool clean, Leg* leg) {
  if (leg && leg->keeps_record()) {
    NbdRecord r;
    r.set_uuid = set_uuid_;
    r.image_uuid = image_uuid;
    r.events = events;
    r.clean = clean;
    if (auto size = leg->size()) r.image_size = *size;
    return leg->write_record(r);
  }
  if (legs_.remote()) return {};  // no leg (degraded): nothing to vouch for
  const int secondary_fd = leg ? leg->fd() : -1;
  nlohmann::json j;
  j["set_uuid"] = utils::to_string(set_uuid_);
  j["image_uuid"] = utils::to_string(image_uuid);
  j["events"] = events;
  j["clean"] = clean;
  if (struct stat st {}; clean && secondary_fd >= 0 && ::fstat(secondary_fd, &st) == 0) {
    const FileIdentity id = FileIdentity::of(st);
    j["ino"] = id.ino;
    j["size"] = id.size;
    j["mtime_ns"] = id.mtime_ns;
  }
  const std::string rrel = record_rel(rel);
  if (auto ec = legs_.secondary.mkdirs(parent_rel(rrel), 0700)) return ec;
  // Beneath a descriptor opened without following symlinks: no path string is re-resolved.
  const std::string dir = parent_rel(rrel);
  auto dfd = legs_.secondary.open_beneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) {
    spdlog::error("{}/{}: record directory unusable: {}", legs_.secondary.path(), dir, dfd.error().message());
    return dfd.error();
  }
  try {
    utils::write_file_atomic_at(dfd->get(), legs_.secondary.path() + "/" + dir, rrel.substr(rrel.rfind('/') + 1),
                                j.dump() + "\n");
  } catch (const utils::Error& e) {
    spdlog::error("{}", e.what());
    return utils::errno_code(e.err() ? e.err() : EIO);  // EMFILE stays EMFILE (image_loader)
  }
  return {};
}

std::error_code SecondaryRecords::remove(const std::string& rel) {
  if (legs_.remote()) return {};
  const std::string rrel = record_rel(rel);
  if (auto ec = legs_.secondary.unlink(rrel)) return ec == std::errc::no_such_file_or_directory ? std::error_code{} : ec;
  return legs_.secondary.sync_parent(rrel);
}

std::error_code SecondaryRecords::rename(const std::string& from, const std::string& to, bool is_dir) {
  if (legs_.remote()) return {};
  const std::string rfrom = record_rel(from, is_dir), rto = record_rel(to, is_dir);
  if (auto ec = legs_.secondary.mkdirs(parent_rel(rto), 0700)) return ec;
  auto rf = legs_.secondary.parent_of(rfrom), rt = legs_.secondary.parent_of(rto);
  if (!rf) return rf.error();
  if (!rt) return rt.error();
  if (::renameat(rf->first.get(), rf->second.c_str(), rt->first.get(), rt->second.c_str()) != 0) {
    const auto ec = utils::last_errno();
    return ec == std::errc::no_such_file_or_directory ? std::error_code{} : ec;  // no record: nothing to move
  }
  if (auto ec = legs_.secondary.sync_parent(rto)) return ec;
  return parent_rel(rfrom) == parent_rel(rto) ? std::error_code{} : legs_.secondary.sync_parent(rfrom);
}

void require_member(const std::string& secondary, const utils::Uuid& set_uuid) {
  const std::string member_path = meta_dir(secondary) + "/" + kMemberName;
  if (::access(member_path.c_str(), F_OK) != 0)
    throw utils::Error(secondary + ": not a member of mirror set " + utils::to_string(set_uuid) + " (no " +
                       kMetaDirName + "/" + kMemberName + "; was it replaced or not created?)");
  const Member m = load_member(member_path);
  if (m.set_uuid != set_uuid)
    throw utils::Error(secondary + ": belongs to another mirror set (" + utils::to_string(m.set_uuid) +
                       ", expected " + utils::to_string(set_uuid) + ")");
}

}  // namespace fusemirror::core
