// core/events.hpp — the set's event log: what `fusemirror monitor` reports.
//
// md has `mdadm --monitor` diff /proc/mdstat between polls; a poll can miss a secondary
// that failed and came back. Here the units that change state post an event the moment
// they do, into a bounded in-memory ring with a sequence number that only grows; the
// control tree shows the ring as MOUNT/.fusemirror/events, and a monitor that remembers
// the last sequence number it saw gets everything after it — or, when more than the
// ring holds happened between two polls, learns exactly how many it lost.
//
// Who posts what (docs/operations.md "Monitoring" has the table users read):
//   Image::fail_secondary            Fail                  the secondary failed (op: error)
//   ImageLoader::load                DegradedArray         an image loaded degraded
//   ResyncEngine::run_resync         RebuildStarted, Rebuild20/40/60/80, RebuildFinished
//   ResyncEngine::run_check          CheckFinished, MismatchesFound
//   Image::readd                     SecondaryReconnected  re-add, or the link's reconnect
//                                                          (core/link.hpp; "automatic: …")
//   Image::note_write_behind_lag     LagExceeded           the write-behind queue is full
//   Namespace::create_image          NewImage
// DeviceDisappeared and EventsLost are the monitor's own (the daemon cannot post them).
//
// The file's text (format_events / parse_events, the one place it is written and read):
//   # fusemirror-events 1 start=START first=FIRST next=NEXT
//   SEQ TIME EVENT IMAGE DETAIL
// START identifies this daemon's life (a remount has another), FIRST is the oldest
// sequence number still held (NEXT when the ring is empty), NEXT the one the next event
// will get. TIME is UTC, ISO 8601 with milliseconds; IMAGE is utils::field(name) ("-" for
// a set-wide event); DETAIL (possibly empty) is utils::printable(detail), the rest of the
// line.
//
// Thread safety: every member may be called concurrently; the lock is a leaf (post() is
// called with namespace, image, bitmap and resync locks held; snapshot() calls its filter
// after dropping it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fusemirror::core {

enum class Event {
  fail,
  degraded_array,
  rebuild_started,
  rebuild20,
  rebuild40,
  rebuild60,
  rebuild80,
  rebuild_finished,
  check_finished,
  mismatches_found,
  secondary_reconnected,
  lag_exceeded,
  new_image,
};
// mdadm's spelling: "Fail", "DegradedArray", "Rebuild20", ...
const char* to_string(Event e);

struct EventRecord {
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;  // unix time, milliseconds
  std::string name;          // to_string(Event), or a monitor's own event name
  std::string image;         // set-relative path; empty for a set-wide event
  std::string detail;
};

struct EventSnapshot {
  std::string start;        // this daemon's life
  std::uint64_t first = 1;  // oldest sequence number held (== next when none is)
  std::uint64_t next = 1;   // the next event's sequence number
  std::vector<EventRecord> events;
};

class EventLog {
 public:
  static constexpr std::size_t kDefaultCapacity = 1024;
  static constexpr std::size_t kMaxDetail = 512;  // bytes of detail kept per event

  explicit EventLog(std::size_t capacity = kDefaultCapacity);

  // Appends an event (the oldest goes when the ring is full). Never throws: without
  // memory the event is dropped, and the sequence number still advances, so a reader
  // sees the gap as lost events.
  void post(Event e, std::string_view image, std::string_view detail = {}) noexcept;
  // The events a reader may see: `visible(image)` false hides one (the control tree's
  // permission filter); FIRST and NEXT are the ring's, whatever is hidden.
  EventSnapshot snapshot(const std::function<bool(const std::string&)>& visible = {}) const;
  std::uint64_t next_seq() const;
  // Blocks until an event numbered >= `seq` exists or `timeout` passed; returns next_seq().
  std::uint64_t wait_for_event(std::uint64_t seq, std::chrono::milliseconds timeout) const;
  const std::string& start_id() const { return start_; }

 private:
  const std::size_t capacity_;
  const std::string start_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<EventRecord> ring_;  // guarded by mu_
  std::uint64_t next_ = 1;        // guarded by mu_
};

// The file's text, and back. parse_events returns nullopt (with `why`) when `text` is not
// an events file of a version it knows.
std::string format_events(const EventSnapshot& s);
std::optional<EventSnapshot> parse_events(std::string_view text, std::string* why = nullptr);
// "2026-11-30T23:06:10.123Z"
std::string format_event_time(std::int64_t unix_ms);

}  // namespace fusemirror::core
