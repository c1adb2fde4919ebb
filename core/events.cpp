#include "core/events.hpp"

#include <ctime>
#include <sstream>

#include "utils/printable.hpp"
#include "utils/uuid.hpp"

namespace fusemirror::core {

namespace {

constexpr std::string_view kHeader = "# fusemirror-events 1 ";

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The value of "KEY=VALUE" among the header's words.
std::optional<std::string> header_value(std::string_view line, std::string_view key) {
  std::istringstream in{std::string(line)};
  std::string word;
  while (in >> word)
    if (word.size() > key.size() && word.compare(0, key.size(), key) == 0 &&
        word[key.size()] == '=')
      return word.substr(key.size() + 1);
  return std::nullopt;
}

std::optional<std::uint64_t> to_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// "2026-11-30T23:06:10.123Z" -> unix ms
std::optional<std::int64_t> parse_time(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &tail) != 8 ||
      tail != 'Z')
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<std::int64_t>(::timegm(&tm)) * 1000 + ms;
}

}  // namespace

const char* to_string(Event e) {
  switch (e) {
    case Event::fail:
      return "Fail";
    case Event::degraded_array:
      return "DegradedArray";
    case Event::rebuild_started:
      return "RebuildStarted";
    case Event::rebuild20:
      return "Rebuild20";
    case Event::rebuild40:
      return "Rebuild40";
    case Event::rebuild60:
      return "Rebuild60";
    case Event::rebuild80:
      return "Rebuild80";
    case Event::rebuild_finished:
      return "RebuildFinished";
    case Event::check_finished:
      return "CheckFinished";
    case Event::mismatches_found:
      return "MismatchesFound";
    case Event::secondary_reconnected:
      return "SecondaryReconnected";
    case Event::lag_exceeded:
      return "LagExceeded";
    case Event::new_image:
      return "NewImage";
  }
  return "Unknown";
}

EventLog::EventLog(std::size_t capacity)
    : capacity_(capacity ? capacity : 1), start_(utils::to_string(utils::random_uuid())) {}

void EventLog::post(Event e, std::string_view image, std::string_view detail) noexcept {
  {
    std::lock_guard lk(mu_);
    const std::uint64_t seq = next_++;
    try {
      if (ring_.size() >= capacity_) ring_.pop_front();
      ring_.push_back({seq, now_ms(), to_string(e), std::string(image),
                       std::string(detail.substr(0, kMaxDetail))});
    } catch (...) {
      // No memory: the event is lost; its number is not reused, so a reader sees the gap.
    }
  }
  cv_.notify_all();
}

EventSnapshot EventLog::snapshot(const std::function<bool(const std::string&)>& visible) const {
  EventSnapshot s;
  s.start = start_;
  {
    std::lock_guard lk(mu_);
    s.next = next_;
    s.first = ring_.empty() ? next_ : ring_.front().seq;
    s.events.assign(ring_.begin(), ring_.end());
  }
  // Filtered outside the lock: `visible` may take the namespace lock, under which others post.
  if (visible)
    std::erase_if(s.events,
                  [&](const EventRecord& r) { return !r.image.empty() && !visible(r.image); });
  return s;
}

std::uint64_t EventLog::next_seq() const {
  std::lock_guard lk(mu_);
  return next_;
}

std::uint64_t EventLog::wait_for_event(std::uint64_t seq, std::chrono::milliseconds timeout) const {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return next_ > seq; });
  return next_;
}

std::string format_event_time(std::int64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char b[80];
  std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return b;
}

std::string format_events(const EventSnapshot& s) {
  std::string out(kHeader);
  out += "start=" + utils::field(s.start) + " first=" + std::to_string(s.first) +
         " next=" + std::to_string(s.next) + "\n";
  for (const auto& e : s.events) {
    out += std::to_string(e.seq) + ' ' + format_event_time(e.time_ms) + ' ' + utils::field(e.name) +
           ' ' + utils::field(e.image);
    if (!e.detail.empty()) out += ' ' + utils::printable(e.detail);
    out += '\n';
  }
  return out;
}

std::optional<EventSnapshot> parse_events(std::string_view text, std::string* why) {
  auto bad = [&](std::string reason) -> std::optional<EventSnapshot> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  const std::size_t eol = text.find('\n');
  const std::string_view header = text.substr(0, eol);
  if (header.substr(0, kHeader.size()) != kHeader)
    return bad("not a fusemirror events file of version 1 (header '" + utils::printable(header) +
               "')");
  EventSnapshot s;
  const auto start = header_value(header, "start");
  const auto first = header_value(header, "first");
  const auto next = header_value(header, "next");
  const auto start_v = utils::unfield(start.value_or(""));
  const auto first_v = to_u64(first.value_or(""));
  const auto next_v = to_u64(next.value_or(""));
  if (!start || !start_v || !first_v || !next_v || first_v.value() > next_v.value())
    return bad("bad header '" + utils::printable(header) + "'");
  s.start = start_v.value();
  s.first = first_v.value();
  s.next = next_v.value();
  std::size_t pos = eol == std::string_view::npos ? text.size() : eol + 1;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    // SEQ TIME EVENT IMAGE [DETAIL]
    std::string_view f[4];
    std::size_t at = 0;
    for (int k = 0; k < 4; ++k) {
      const std::size_t sp = line.find(' ', at);
      f[k] = line.substr(at, sp == std::string_view::npos ? std::string_view::npos : sp - at);
      at = sp == std::string_view::npos ? line.size() : sp + 1;
      if (f[k].empty()) return bad("short line '" + utils::printable(line) + "'");
      if (sp == std::string_view::npos && k < 3)
        return bad("short line '" + utils::printable(line) + "'");
    }
    EventRecord r;
    auto seq = to_u64(f[0]);
    auto t = parse_time(std::string(f[1]));
    auto name = utils::unfield(f[2]);
    auto image = utils::unfield(f[3]);
    auto detail = utils::unprintable(at < line.size() ? line.substr(at) : std::string_view{});
    if (!seq || !t || !name || !image || !detail)
      return bad("bad line '" + utils::printable(line) + "'");
    r.seq = *seq;
    r.time_ms = *t;
    r.name = std::move(*name);
    r.image = std::move(*image);
    r.detail = std::move(*detail);
    s.events.push_back(std::move(r));
  }
  return s;
}

}  // namespace fusemirror::core
