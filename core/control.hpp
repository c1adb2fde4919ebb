// core/control.hpp — the operator's verbs (md's sysfs and mdadm --fail / --re-add), the
// control-line parser of MOUNT/.fusemirror/control, and the md-sysfs attribute table of
// MOUNT/.fusemirror/images/<image>/ (docs/operations.md).
//
// Looking never changes state: attributes are read from images already loaded, or from the
// summary of one evicted for the descriptor budget, never by loading one (which could create
// its secondary copy and start a resync).
//
// Errors: every verb returns an errno-valued std::error_code and logs its reason once,
// here, where the refusal is decided (docs/design.md "Errors"). Who may call a verb is the
// front end's decision (the mount's owner and root only).
//
// Thread safety: every member may be called concurrently.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "core/config.hpp"
#include "core/image_table.hpp"
#include "core/legs.hpp"
#include "core/namespace.hpp"
#include "core/progress.hpp"
#include "core/records.hpp"
#include "core/resync.hpp"
#include "core/sweeper.hpp"

namespace fusemirror::core {

// One control line: "fail IMAGE", "re-add IMAGE", "sync-action IMAGE ACTION". IMAGE is
// either the rest of the line (for sync-action: up to its last word), so that names with
// spaces work as they are, or a double-quoted string with C escapes (\\ \" \n \t \xNN) for
// names with leading or trailing spaces or control characters.
struct ControlLine {
  enum class Verb { fail, readd, sync_action } verb = Verb::fail;
  std::string image;
  SyncAction action = SyncAction::idle;  // sync_action only
};
// nullopt with `*why` set when the line does not parse.
std::optional<ControlLine> parse_control_line(std::string_view line, std::string* why);
// The line that parse_control_line() reads back as `c` (the name quoted when it must be).
std::string format_control_line(const ControlLine& c);

// An md-sysfs-style attribute file of an image.
struct Attribute {
  const char* name;
  bool writable;
};
std::span<const Attribute> attributes();
const Attribute* find_attribute(std::string_view name);

class Control {
 public:
  struct Parts {
    const Config& config;
    Legs& legs;
    ImageTable& table;
    Namespace& ns;
    SecondaryRecords& records;
    ResyncEngine& resync;
    ProgressTracker& progress;
    SecondaryWatch& watch;
  };
  explicit Control(Parts p) : p_(p) {}

  std::error_code fail(const std::string& rel);
  std::error_code readd(const std::string& rel);
  // The link's automatic try (core/link.hpp): re-add's steps for an image already loaded;
  // `*why` gets the reason when the secondary cannot be put back (logged by the caller).
  std::error_code reconnect(const std::shared_ptr<Image>& img, std::string* why);
  std::error_code sync_action(const std::string& rel, SyncAction action);
  // Parses and runs one control line.
  std::error_code run_line(std::string_view line);

  // An attribute's value as its file shows it (one line, newline-terminated). ENOENT when
  // the image is neither loaded nor evicted.
  utils::Result<std::string> read_attribute(const std::string& rel, const Attribute& a) const;
  // One write to an attribute file is one command (echo's trailing newline is dropped).
  std::error_code write_attribute(const std::string& rel, const Attribute& a, std::string_view value);

 private:
  // The loaded image REL, or ENOENT (logged for `verb`).
  utils::Result<std::shared_ptr<Image>> loaded(const std::string& rel, const char* verb) const;
  // Re-opens a secondary that vanished, when it is back and still this set's (`*why`: the
  // reason when not).
  std::error_code reattach_secondary(std::string* why);
  // The one re-add path, for the operator and the link: a new leg, the identity proof, a
  // bitmap-only or (proof failed) full resync queued. REQUIRES `img` degraded.
  std::error_code put_back(const std::shared_ptr<Image>& img, const std::string& rel, bool automatic,
                           std::string* why);

  Parts p_;
};

}  // namespace fusemirror::core
