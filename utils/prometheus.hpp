// utils/prometheus.hpp — the Prometheus text exposition format (version 0.0.4), written.
//
// What node_exporter's textfile collector reads: for each metric family one "# HELP" and
// one "# TYPE" line, then all its samples, one per line:
//
//   # HELP fusemirror_dirty_chunks Bits set in the image's bitmap.
//   # TYPE fusemirror_dirty_chunks gauge
//   fusemirror_dirty_chunks{mount="/mnt/images",image="disk.img"} 387
//
// Escaping (the format's only escapes): in a label value backslash -> \\, double quote ->
// \", newline -> \n; in HELP text backslash -> \\ and newline -> \n. Label values must be
// UTF-8: label_value() gives the text a label should carry for an untrusted name.
// Samples are grouped by family in the order the families were declared, whatever the
// order of add() calls (the format requires a family's samples to be contiguous).
//
// Not thread-safe (one writer builds one text).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fusemirror::utils::prometheus {

std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
// A sample value: integers below 2^53 exactly ("387"), others shortest round-trip
// ("0.25", "1.5e+20"), "NaN", "+Inf", "-Inf".
std::string format_value(double v);
// An untrusted name (image, path) as a label's value: as it is when it is valid UTF-8 with
// no control character other than newline (which escape_label_value escapes); otherwise
// utils::printable(name), the form `fusemirror status` shows (the format has no escape for
// other bytes).
std::string label_value(std::string_view name);

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  // Declares a family. `type` is counter, gauge, untyped...; a counter's name ends in
  // "_total" by convention (the caller's choice).
  void family(std::string name, std::string type, std::string help);
  // One sample of a declared family (REQUIRES: declared). Label values are raw: they are
  // escaped here.
  void add(std::string_view family, const Labels& labels, double value);
  // The whole text, one trailing newline.
  std::string text() const;

 private:
  struct Family {
    std::string name, type, help;
    std::vector<std::string> samples;  // formatted lines
  };
  std::vector<Family> families_;
};

}  // namespace fusemirror::utils::prometheus
