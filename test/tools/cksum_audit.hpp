// test/tools/cksum_audit.hpp — the checksum invariant after a crash (docs/write-path.md §9.1,
// docs/reliability.md invariant 9): no checksum that a mount would trust accuses a leg.
// Shared by fm_cksumcheck (a directory after a kill) and fm_powercut (every replayed state).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "utils/result.hpp"

namespace fmtest {

struct CksumAudit {
  std::string not_trusted;  // non-empty: why a mount resets the checksums (nothing to check)
  std::uint64_t entries = 0;   // clean chunks with a checksum a mount would trust
  std::uint64_t accusing = 0;  // of them, those that differ from a leg's data
  std::uint64_t clean = 0;     // chunks with a clear bit
  // Every accusing chunk, with what its checksum matches ("the primary only", ...).
  std::vector<std::pair<std::uint64_t, std::string>> accusations;
};

// Reads the files as a mount would find them (nothing is changed): `bitmap` and `checksums`
// may be -1 (no such file). For every chunk whose bit is clear and whose entry page is
// valid, hashes the chunk on both legs; an entry that differs from either is an accusation.
// Errors: I/O errors reading any of the files.
fusemirror::utils::Result<CksumAudit> audit_checksums(int primary, int secondary, int bitmap, int checksums);

}  // namespace fmtest
