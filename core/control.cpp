#include "core/control.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>

#include "utils/error.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

namespace {

constexpr Attribute kAttributes[] = {
    {"sync_action", true},     // idle | resync | check | repair (md's sync_action)
    {"sync_completed", false}, // "DONE / TOTAL" bytes, or "none"
    {"sync_speed", false},     // bytes/s of the running pass (0 when idle)
    {"sync_speed_min", true},  // bytes/s; set-wide (md's is per array too)
    {"sync_speed_max", true},  // bytes/s, 0 = unlimited; set-wide
    {"mismatch_cnt", false},   // chunks found different by the last check/repair
    {"state", false},          // clean | active | resyncing | checking | degraded
    {"degraded", false},       // 1 when the secondary is out of service
    {"secondary", true},       // in_sync | recovering | faulty; write fail | re-add
    {"dirty_chunks", false},   // set bits of the bitmap
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// A double-quoted name with C escapes; `rest` gets what follows the closing quote.
std::optional<std::string> unquote(std::string_view s, std::string_view* rest, std::string* why) {
  std::string out;
  for (std::size_t i = 1; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      *rest = s.substr(i + 1);
      return out;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= s.size()) break;
    switch (s[i]) {
      case '\\': out += '\\'; break;
      case '"': out += '"'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'x': {
        auto hex = [](char h) { return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                             : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1; };
        if (i + 2 >= s.size() || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) {
          *why = "bad \\x escape in the quoted image name";
          return std::nullopt;
        }
        out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
        i += 2;
        break;
      }
      default: *why = std::string("unknown escape \\") + s[i] + " in the quoted image name"; return std::nullopt;
    }
  }
  *why = "unterminated quoted image name";
  return std::nullopt;
}

}  // namespace

std::span<const Attribute> attributes() { return kAttributes; }

const Attribute* find_attribute(std::string_view name) {
  for (const auto& a : kAttributes)
    if (name == a.name) return &a;
  return nullptr;
}

std::optional<ControlLine> parse_control_line(std::string_view line, std::string* why) {
  static const char* kUsage = "usage: fail IMAGE | re-add IMAGE | sync-action IMAGE idle|resync|check|repair";
  line = trim(line);
  const auto sp = line.find_first_of(" \t");
  const std::string_view verb = line.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : trim(line.substr(sp));
  ControlLine c;
  if (verb == "fail") c.verb = ControlLine::Verb::fail;
  else if (verb == "re-add") c.verb = ControlLine::Verb::readd;
  else if (verb == "sync-action") c.verb = ControlLine::Verb::sync_action;
  else {
    *why = verb.empty() ? std::string(kUsage) : "unknown control '" + std::string(verb) + "' (" + kUsage + ")";
    return std::nullopt;
  }
  std::string_view arg;
  if (!rest.empty() && rest.front() == '"') {
    std::string_view after;
    auto name = unquote(rest, &after, why);
    if (!name) return std::nullopt;
    c.image = std::move(*name);
    arg = trim(after);
  } else if (c.verb == ControlLine::Verb::sync_action) {
    const auto last = rest.find_last_of(" \t");
    if (last == std::string_view::npos) {
      *why = kUsage;
      return std::nullopt;
    }
    c.image = std::string(trim(rest.substr(0, last)));
    arg = rest.substr(last + 1);
  } else {
    c.image = std::string(rest);
  }
  if (c.image.empty()) {
    *why = kUsage;
    return std::nullopt;
  }
  if (c.verb == ControlLine::Verb::sync_action) {
    auto a = parse_sync_action(arg);
    if (!a) {
      *why = "unknown sync action '" + std::string(arg) + "' (idle, resync, check, repair)";
      return std::nullopt;
    }
    c.action = *a;
  } else if (!arg.empty()) {
    *why = "unexpected '" + std::string(arg) + "' after the quoted image name";
    return std::nullopt;
  }
  return c;
}

std::string format_control_line(const ControlLine& c) {
  static const char* kVerbs[] = {"fail", "re-add", "sync-action"};
  std::string name = c.image;
  const bool plain = !name.empty() && name.front() != '"' && name.front() != ' ' && name.front() != '\t' &&
                     name.back() != ' ' && name.back() != '\t' &&
                     std::none_of(name.begin(), name.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; });
  if (!plain) {
    std::string q = "\"";
    for (const char ch : name) {
      const auto u = static_cast<unsigned char>(ch);
      if (ch == '"' || ch == '\\') q += std::string("\\") + ch;
      else if (u < 0x20 || u == 0x7f) {
        char b[5];
        std::snprintf(b, sizeof b, "\\x%02x", u);
        q += b;
      } else q += ch;
    }
    name = q + "\"";
  }
  std::string line = std::string(kVerbs[static_cast<int>(c.verb)]) + " " + name;
  if (c.verb == ControlLine::Verb::sync_action) line += std::string(" ") + to_string(c.action);
  return line;
}

std::error_code Control::run_line(std::string_view line) {
  std::string why;
  auto c = parse_control_line(line, &why);
  if (!c) {
    spdlog::warn("control refused: {}", why);
    return utils::errno_code(EINVAL);
  }
  switch (c->verb) {
    case ControlLine::Verb::fail: return fail(c->image);
    case ControlLine::Verb::readd: return readd(c->image);
    case ControlLine::Verb::sync_action: return sync_action(c->image, c->action);
  }
  return utils::errno_code(EINVAL);
}

std::error_code Control::fail(const std::string& rel) {
  auto img = p_.ns.open_image(rel);
  if (!img) {
    spdlog::warn("fail {}: {}", rel, img.error().message());
    return img.error();
  }
  if (!(*img)->secondary_ok()) {
    if ((*img)->held_out()) {
      spdlog::warn("fail {}: the secondary is already out of service", rel);
      return utils::errno_code(EALREADY);
    }
    // Lost by the link (and being retried): from now on only re-add brings it back.
    spdlog::warn("{}: secondary held out by the operator (it was already out of service)", rel);
    return (*img)->hold_out();
  }
  spdlog::warn("{}: secondary failed by the operator", rel);
  // Before the failure: the link must never retry it (core/link.hpp), and the bitmap's
  // degraded flag is written with the held flag.
  (void)(*img)->hold_out();
  (*img)->fail_secondary("operator request", utils::errno_code(ECANCELED));
  return {};
}

std::error_code Control::reattach_secondary(std::string* why) {
  // The secondary directory came back (remounted): it must be the same set's.
  auto d = Dir::open(p_.config.secondary);
  if (!d) {
    *why = p_.config.secondary + ": secondary directory unusable: " + d.error().message();
    return d.error();
  }
  try {
    require_member(p_.config.secondary, p_.config.uuid);
  } catch (const utils::Error& e) {
    *why = e.what();
    return utils::errno_code(EINVAL);
  }
  p_.legs.secondary = std::move(*d);
  p_.watch.reattach(p_.legs.secondary);
  return {};
}

std::error_code Control::readd(const std::string& rel) {
  auto img = p_.ns.open_image(rel);
  if (!img) {
    spdlog::warn("re-add {}: {}", rel, img.error().message());
    return img.error();
  }
  if ((*img)->secondary_ok()) {
    spdlog::warn("re-add {}: the secondary is in service (fail it first)", rel);
    return utils::errno_code(EBUSY);
  }
  std::string why;
  const std::error_code ec = put_back(*img, rel, false, &why);
  if (ec && !why.empty()) spdlog::error("{}: re-add refused: {}", rel, why);
  return ec;
}

std::error_code Control::reconnect(const std::shared_ptr<Image>& img, std::string* why) {
  return put_back(img, img->name(), true, why);
}

std::error_code Control::put_back(const std::shared_ptr<Image>& img, const std::string& rel, bool automatic,
                                  std::string* why) {
  auto pst = img->stat();
  if (!pst) {
    *why = "the primary: " + pst.error().message();
    return pst.error();
  }
  bool sec_new = false;
  std::string refused;
  // An export is connected before the namespace lock is taken: a server that does not
  // answer holds this caller up to secondary_timeout, never every namespace operation. A
  // directory's copy is opened (or made) under the lock, as a load does.
  std::unique_ptr<Leg> leg;
  std::error_code leg_ec;
  auto open_leg = [&] {
    auto r = open_secondary_leg(p_.legs, rel, *pst, &sec_new, &refused);
    if (r) leg = std::move(*r);
    else leg_ec = r.error();
  };
  if (p_.legs.remote()) open_leg();
  auto ns = p_.ns.lock_exclusive();
  if (img->secondary_ok()) return utils::errno_code(EBUSY);
  if (automatic) {
    // Between the snapshot and the lock: renamed, removed, or failed by the operator.
    if (img->held_out()) {
      *why = "failed by the operator meanwhile";
      return utils::errno_code(ECANCELED);
    }
    if (img->name() != rel || p_.table.find(rel) != img) {
      *why = "renamed or removed meanwhile";
      return utils::errno_code(EAGAIN);
    }
  }
  if (p_.watch.vanished())
    if (auto ec = reattach_secondary(why)) return ec;
  if (!p_.legs.remote()) open_leg();
  if (!leg) {
    *why = p_.legs.remote() ? refused : p_.config.secondary + "/" + rel + ": " + refused;
    return leg_ec;
  }
  // The proof that the bitmap covers what the copy lacks: the record in the secondary
  // directory, or the export's own identity record (core/nbd_record.hpp).
  std::string gap = sec_new ? "the secondary has no copy of the image" : "";
  if (!sec_new) {
    const BitmapStats bs = img->bitmap()->stats();
    CoverageFacts facts{p_.config.uuid, img->bitmap()->image_uuid(), bs.events, bs.events_cleared, {}};
    if (struct stat sst {}; leg->fd() >= 0 && ::fstat(leg->fd(), &sst) == 0)
      facts.secondary_file = FileIdentity::of(sst);
    gap = why_not_covered(p_.records.read(rel, leg.get()), facts);
  }
  const bool full = !gap.empty();
  if (full) spdlog::warn("{}: {}: full resync: {}", rel, automatic ? "reconnect" : "re-add", gap);
  if (auto ec = img->readd(std::move(leg), full, automatic)) {
    *why = "re-adding: " + ec.message();
    return ec;
  }
  if (auto ec = p_.records.write(rel, img->bitmap()->image_uuid(), img->bitmap()->stats().events, false,
                                 img->secondary_leg())) {
    img->fail_secondary("record write", ec);
    *why = "record write: " + ec.message();
    return ec;
  }
  p_.resync.queue(img, SyncAction::resync);
  return {};
}

std::error_code Control::sync_action(const std::string& rel, SyncAction action) {
  auto img = p_.ns.open_image(rel);
  if (!img) {
    spdlog::warn("sync-action {}: {}", rel, img.error().message());
    return img.error();
  }
  if (action == SyncAction::idle) {
    p_.resync.cancel(*img);
    return {};
  }
  if (!(*img)->secondary_ok()) {
    spdlog::warn("sync-action {} {}: the image is degraded; re-add its secondary first", rel, to_string(action));
    return utils::errno_code(EIO);
  }
  if (action == SyncAction::resync)
    if (auto ec = (*img)->bitmap()->mark_all_dirty_unsynced()) {
      spdlog::error("sync-action {} resync: cannot mark the image for a full resync: {}", rel, ec.message());
      return ec;
    }
  p_.resync.queue(*img, action);
  return {};
}

utils::Result<std::shared_ptr<Image>> Control::loaded(const std::string& rel, const char* verb) const {
  if (auto img = p_.table.find(rel)) return img;
  spdlog::debug("{} {}: no such image loaded", verb, rel);
  return utils::errno_code(ENOENT);
}

utils::Result<std::string> Control::read_attribute(const std::string& rel, const Attribute& a) const {
  // An image evicted for the descriptor budget is shown from its summary, never loaded.
  ImageStatus s;
  if (auto img = loaded(rel, a.name)) s = (*img)->status();
  else if (auto sum = p_.table.summary(rel)) s = unloaded_status(std::move(*sum), p_.watch.vanished());
  else return img.error();
  const std::string_view n = a.name;
  std::string v;
  if (n == "sync_action") v = to_string(s.action);
  else if (n == "sync_completed")
    v = s.action == SyncAction::idle ? "none"
                                     : std::to_string(s.sync_done_bytes) + " / " + std::to_string(s.sync_total_bytes);
  else if (n == "sync_speed") {
    auto r = p_.progress.rate(rel);
    v = std::to_string(s.action != SyncAction::idle && r ? static_cast<std::uint64_t>(r->speed) : 0);
  } else if (n == "sync_speed_min") v = std::to_string(p_.resync.min_rate());
  else if (n == "sync_speed_max") v = std::to_string(p_.resync.max_rate());
  else if (n == "mismatch_cnt") v = std::to_string(s.mismatch_cnt);
  else if (n == "state") v = s.state;
  else if (n == "degraded") v = s.secondary_ok ? "0" : "1";
  else if (n == "secondary") v = !s.secondary_ok ? "faulty" : s.bitmap.unsynced_chunks ? "recovering" : "in_sync";
  else if (n == "dirty_chunks") v = std::to_string(s.bitmap.dirty_chunks);
  return v + "\n";
}

std::error_code Control::write_attribute(const std::string& rel, const Attribute& a, std::string_view value) {
  const std::string v(trim(value));
  const std::string_view n = a.name;
  auto refuse = [&](int err, const std::string& why) {
    spdlog::warn("{}/{}: write '{}' refused: {}", rel, a.name, v, why);
    return utils::errno_code(err);
  };
  if (n == "sync_action") {
    auto act = parse_sync_action(v);
    if (!act) return refuse(EINVAL, "unknown sync action (idle, resync, check, repair)");
    return sync_action(rel, *act);
  }
  if (n == "secondary") {
    if (v == "fail" || v == "faulty") return fail(rel);
    if (v == "re-add" || v == "readd") return readd(rel);
    return refuse(EINVAL, "write 'fail' or 're-add'");
  }
  if (n == "sync_speed_min" || n == "sync_speed_max") {
    auto r = utils::parse_size(v);
    if (!r) return refuse(EINVAL, "not a rate in bytes/s (e.g. 1048576 or 10M)");
    return n == "sync_speed_min" ? p_.resync.set_min_rate(*r) : p_.resync.set_max_rate(*r);
  }
  return refuse(EACCES, "the attribute is read-only");
}

}  // namespace fusemirror::core
