#include "fusemirror/control_tree.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "fusemirror/status_json.hpp"
#include "utils/perm.hpp"

namespace fusemirror::fuse {

namespace {

// SECURITY: controls are the mount owner's (and root's) only.
bool caller_owns_mount() {
  const uid_t uid = fuse_get_context()->uid;
  return uid == 0 || uid == ::getuid();
}

utils::Credentials caller() {
  const fuse_context* ctx = fuse_get_context();
  utils::Credentials c{ctx->uid, ctx->gid, {}};
  if (c.uid != 0) {
    const int n = fuse_getgroups(0, nullptr);
    if (n > 0) {
      c.groups.resize(static_cast<std::size_t>(n));
      const int got = fuse_getgroups(n, c.groups.data());
      c.groups.resize(got > 0 ? static_cast<std::size_t>(std::min(got, n)) : 0);
    }
  }
  return c;
}

// What a path under the control directory names.
struct Node {
  enum Kind { none, hidden, root, status, events, control, dir, image, attr } kind = none;
  std::string rel{};                   // dir / image / attr: the set-relative path of the dir or image
  const core::Attribute* def = nullptr;  // attr: which one
};

// MOUNT/.fusemirror/images mirrors the set's tree: a directory of the set is a directory
// here, an image is a directory of attribute files. A name is an attribute only below an
// image, so an image called "state" in a subdirectory is still reachable.
Node resolve(core::MirrorSet& set, const char* p) {
  if (std::strcmp(p, kControlDir) == 0) return {Node::root};
  if (std::strcmp(p, kStatusFile) == 0) return {Node::status};
  if (std::strcmp(p, kEventsFile) == 0) return {Node::events};
  if (std::strcmp(p, kControlFile) == 0) return {Node::control};
  if (std::strcmp(p, kImagesDir) == 0) return {Node::dir, ""};
  const std::size_t n = std::strlen(kImagesDir);
  if (std::strncmp(p, kImagesDir, n) != 0 || p[n] != '/') return {};
  const std::string rest = p + n + 1;
  // Nothing about REST is looked at before the caller is known to reach it.
  if (!set.ns().reachable_by(rest, caller())) return {Node::hidden};
  if (auto st = set.ns().getattr(rest); st) {
    if (S_ISDIR(st->st_mode)) return {Node::dir, rest};
    if (S_ISREG(st->st_mode)) return {Node::image, rest};
    return {};
  }
  const auto slash = rest.rfind('/');
  if (slash == std::string::npos) return {};
  const std::string parent = rest.substr(0, slash);
  if (const auto* a = core::find_attribute(rest.substr(slash + 1)))
    if (auto st = set.ns().getattr(parent); st && S_ISREG(st->st_mode)) return {Node::attr, parent, a};
  return {};
}

int missing(const Node& node) { return node.kind == Node::hidden ? -EACCES : -ENOENT; }

std::string status_for_caller(core::MirrorSet& set) {
  core::SetStatus s = set.status();
  const utils::Credentials who = caller();
  std::erase_if(s.images, [&](const core::ImageStatus& i) { return !set.ns().reachable_by(i.name, who); });
  return to_json(s).dump(2) + "\n";
}

// The event log as the caller may see it: events of images it could not reach through the
// mount are left out (their sequence numbers still count: a monitor does not take the gap
// for lost events, core/events.hpp).
std::string events_for_caller(core::MirrorSet& set) {
  const utils::Credentials who = caller();
  return core::format_events(
      set.events().snapshot([&](const std::string& image) { return set.ns().reachable_by(image, who); }));
}

}  // namespace

bool is_control(const char* p) {
  const std::size_t n = std::strlen(kControlDir);
  return p && std::strncmp(p, kControlDir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

int control_getattr(core::MirrorSet& set, const char* path, struct stat* st) {
  // Sizes are 0: the files are direct_io, a read returns what the daemon says now.
  const Node node = resolve(set, path);
  std::memset(st, 0, sizeof *st);
  st->st_uid = ::getuid();
  st->st_gid = ::getgid();
  st->st_nlink = 1;
  switch (node.kind) {
    case Node::root:
    case Node::dir:
    case Node::image: st->st_mode = S_IFDIR | 0555; st->st_nlink = 2; break;
    case Node::status:
    case Node::events: st->st_mode = S_IFREG | 0444; break;
    case Node::control: st->st_mode = S_IFREG | 0200; break;
    case Node::attr: st->st_mode = S_IFREG | (node.def->writable ? 0644 : 0444); break;
    case Node::none:
    case Node::hidden: return missing(node);
  }
  return 0;
}

int control_readdir(core::MirrorSet& set, const char* path, void* buf, fuse_fill_dir_t filler) {
  const Node node = resolve(set, path);
  auto add = [&](const char* name) { filler(buf, name, nullptr, 0, fuse_fill_dir_flags{}); };
  switch (node.kind) {
    case Node::root:
      add("status.json");
      add("events");
      add("control");
      add("images");
      return 0;
    case Node::image:
      for (const auto& a : core::attributes()) add(a.name);
      return 0;
    case Node::dir: {
      // Listing needs read permission on the directory, as through the mount.
      auto st = set.ns().getattr(node.rel);
      if (!st) return neg(st.error());
      if (!utils::permits(*st, caller(), R_OK)) return -EACCES;
      auto r = set.ns().readdir(node.rel);
      if (!r) return neg(r.error());
      for (const auto& e : *r) add(e.name.c_str());
      return 0;
    }
    case Node::none:
    case Node::hidden: return missing(node);
    default: return -ENOTDIR;
  }
}

int control_open(core::MirrorSet& set, const char* path, fuse_file_info* fi) {
  const Node node = resolve(set, path);
  const bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
  auto h = std::make_unique<Handle>();
  switch (node.kind) {
    case Node::control:
      if (!caller_owns_mount() || !writing) return -EACCES;
      h->control = true;
      break;
    case Node::status:
      if (writing) return -EACCES;
      h->content = status_for_caller(set);
      break;
    case Node::events:
      if (writing) return -EACCES;
      h->content = events_for_caller(set);
      break;
    case Node::attr: {
      // SECURITY: only the mount's owner (and root) may change anything.
      if (writing && (!node.def->writable || !caller_owns_mount())) return -EACCES;
      auto v = set.control().read_attribute(node.rel, *node.def);
      if (!v) return neg(v.error());
      h->content = std::move(*v);
      h->attr_image = node.rel;
      h->attr = node.def;
      break;
    }
    case Node::none:
    case Node::hidden: return missing(node);
    default: return -EISDIR;
  }
  fi->direct_io = 1;  // size unknown to the kernel: read what we return
  fi->fh = reinterpret_cast<std::uint64_t>(h.release());
  return 0;
}

int control_write(core::MirrorSet& set, Handle& h, const char* buf, size_t size) {
  if (!caller_owns_mount()) return -EACCES;
  const std::string_view v(buf, size);
  const std::string shown(v.substr(0, v.find('\n')));
  std::error_code ec = h.control ? set.control().run_line(v) : set.control().write_attribute(h.attr_image, *h.attr, v);
  if (ec) return neg(ec);
  if (h.control) spdlog::info("control '{}' done", shown);
  else spdlog::info("{}/{}: '{}' done", h.attr_image, h.attr->name, shown);
  return static_cast<int>(size);
}

int control_truncate(core::MirrorSet& set, const char* path, const Handle* h) {
  // `echo X > FILE` truncates first: a no-op for the control files, the owner's only.
  if (h && (h->control || h->attr)) return caller_owns_mount() ? 0 : -EACCES;
  const Node node = resolve(set, path);
  if (node.kind == Node::control || (node.kind == Node::attr && node.def->writable))
    return caller_owns_mount() ? 0 : -EACCES;
  return node.kind == Node::none || node.kind == Node::hidden ? missing(node) : -EPERM;
}

}  // namespace fusemirror::fuse
