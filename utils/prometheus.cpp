#include "utils/prometheus.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "utils/printable.hpp"

namespace fusemirror::utils::prometheus {

namespace {

// The format's escapes: backslash and newline always, the double quote in label values.
std::string escape(std::string_view v, bool quote) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

}  // namespace

std::string escape_label_value(std::string_view v) { return escape(v, true); }

std::string escape_help(std::string_view v) { return escape(v, false); }

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char b[40];
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    std::snprintf(b, sizeof b, "%.0f", v);
    return b;
  }
  // The shortest text that reads back as the same double (17 digits always do).
  for (int prec = 1; prec < 17; ++prec) {
    std::snprintf(b, sizeof b, "%.*g", prec, v);
    if (std::strtod(b, nullptr) == v) return b;
  }
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::string label_value(std::string_view name) {
  // printable() leaves valid UTF-8 without controls as it is (backslashes aside, which it
  // would double: checked with escape_backslash = false). A newline is the one control the
  // format can carry.
  std::string probe;
  probe.reserve(name.size());
  for (char c : name)
    if (c != '\n') probe += c;
  if (printable(probe, /*escape_backslash=*/false) == probe) return std::string(name);
  return printable(name);
}

void Exposition::family(std::string name, std::string type, std::string help) {
  families_.push_back({std::move(name), std::move(type), std::move(help), {}});
}

void Exposition::add(std::string_view family, const Labels& labels, double value) {
  for (auto& f : families_) {
    if (f.name != family) continue;
    std::string line = f.name;
    if (!labels.empty()) {
      line += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i) line += ',';
        line += labels[i].first + "=\"" + escape_label_value(labels[i].second) + '"';
      }
      line += '}';
    }
    line += ' ' + format_value(value);
    f.samples.push_back(std::move(line));
    return;
  }
  throw std::logic_error("prometheus: sample of undeclared family " + std::string(family));
}

std::string Exposition::text() const {
  std::string out;
  for (const auto& f : families_) {
    if (f.samples.empty()) continue;
    out += "# HELP " + f.name + ' ' + escape_help(f.help) + '\n';
    out += "# TYPE " + f.name + ' ' + f.type + '\n';
    for (const auto& s : f.samples) out += s + '\n';
  }
  return out;
}

}  // namespace fusemirror::utils::prometheus
