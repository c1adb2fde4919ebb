#include "core/rescale.hpp"

#include "utils/crash_point.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>

#include "core/config.hpp"
#include "utils/error.hpp"
#include "utils/fd.hpp"
#include "utils/io.hpp"
#include "utils/size.hpp"

namespace fusemirror::core {

using utils::Error;

namespace {

bool get_bit(std::span<const std::byte> b, std::uint64_t i) {
  return (static_cast<unsigned>(b[i / 8]) >> (i % 8)) & 1u;
}
void set_bit(std::vector<std::byte>& b, std::uint64_t i) { b[i / 8] |= std::byte(1u << (i % 8)); }

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

constexpr std::uint64_t kProgressEvery = 1u << 20;  // old chunks between progress calls

}  // namespace

std::uint64_t count_bits(std::span<const std::byte> bits, std::uint64_t nbits) {
  std::uint64_t n = 0;
  const std::uint64_t whole = std::min<std::uint64_t>(nbits / 8, bits.size());
  for (std::uint64_t i = 0; i < whole; ++i) n += std::popcount(static_cast<unsigned>(bits[i]));
  for (std::uint64_t i = whole * 8; i < nbits && i / 8 < bits.size(); ++i) n += get_bit(bits, i);
  return n;
}

std::vector<std::byte> rescale_bits(std::span<const std::byte> old_bits, std::uint64_t sync_size,
                                    std::uint64_t old_chunk, std::uint64_t new_chunk,
                                    const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  const std::uint64_t old_n = ceil_div(sync_size, old_chunk);
  const std::uint64_t new_n = ceil_div(sync_size, new_chunk);
  std::vector<std::byte> out(ceil_div(new_n, 8), std::byte{0});
  if (progress) progress(0, old_n);
  // Walk the set bits of the old map only (a byte at a time skips clean regions fast).
  for (std::uint64_t byte = 0; byte * 8 < old_n && byte < old_bits.size(); ++byte) {
    if (progress && byte % (kProgressEvery / 8) == 0 && byte) progress(byte * 8, old_n);
    auto v = static_cast<unsigned>(old_bits[byte]);
    while (v) {
      const std::uint64_t i = byte * 8 + static_cast<std::uint64_t>(std::countr_zero(v));
      v &= v - 1;
      if (i >= old_n) break;  // padding past the last chunk means nothing
      if (new_chunk >= old_chunk) {
        // collapse: old chunk i lies inside new chunk i / ratio; OR it in
        set_bit(out, i / (new_chunk / old_chunk));
      } else {
        // expand: every child of old chunk i inherits the bit (the last may be partial)
        const std::uint64_t r = old_chunk / new_chunk;
        const std::uint64_t end = std::min(new_n, (i + 1) * r);
        for (std::uint64_t j = i * r; j < end; ++j) set_bit(out, j);
      }
    }
  }
  if (progress) progress(old_n, old_n);
  return out;
}

RescaleReport rescale_bitmap_file(const std::string& path, std::uint64_t new_chunk,
                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  if (auto why = check_chunk_size(new_chunk); !why.empty())
    throw Error("--chunk-size: " + why);
  utils::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) throw utils::sys_error(path, "cannot open the bitmap", errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw utils::sys_error(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");

  auto found = read_bitmap_file(fd.get());
  if (!found) throw utils::sys_error(path, "cannot read", found.error().value());
  if (!found->header) throw Error(path + ": " + found->problem + "; not rescaled");
  if (found->implausible)
    throw Error(path + ": not trusted: " + found->problem +
                "; not rescaled (a mount treats this bitmap as all dirty)");
  if (found->bits_truncated)
    throw Error(path + ": " + found->problem + "; not rescaled (a mount treats this bitmap as all dirty)");
  if (found->no_bits)
    throw Error(path + ": written with bitmap \"none\" (the header alone): no bits to rescale");
  const BitmapHeader* h = &*found->header;
  const std::vector<std::byte>& bits = found->bits;

  RescaleReport rep;
  rep.before = *h;
  const std::uint64_t old_n = h->bit_count();
  rep.dirty_before = count_bits(bits, old_n);
  if (h->chunk_size == new_chunk) {
    rep.after = *h;
    rep.dirty_after = rep.dirty_before;
    return rep;
  }

  auto out = rescale_bits(bits, h->sync_size, h->chunk_size, new_chunk, progress);
  BitmapHeader nh = *h;
  nh.chunk_size = new_chunk;
  nh.events = h->events + 1;
  rep.after = nh;
  rep.dirty_after = count_bits(out, nh.bit_count());
  rep.changed = true;

  // The new file: header, then the bits padded to whole 4 KiB pages (as the daemon writes).
  std::vector<std::byte> file(kHeaderSize + bits_bytes(nh.bit_count()), std::byte{0});
  const auto hdr = encode_header(nh);
  std::copy(hdr.begin(), hdr.end(), file.begin());
  std::copy(out.begin(), out.end(), file.begin() + kHeaderSize);

  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = dir + "/." + base + ".rescale.XXXXXX";
  utils::UniqueFd tfd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!tfd) throw utils::sys_error(dir, "cannot create a temporary file", errno);
  auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    return utils::sys_error(tmp, what, err);
  };
  // Same mode and owner as the bitmap it replaces (root may rescale a user's set).
  if (::fchmod(tfd.get(), st.st_mode & 07777) != 0) throw fail("cannot chmod", errno);
  if (::geteuid() == 0 && ::fchown(tfd.get(), st.st_uid, st.st_gid) != 0) throw fail("cannot chown", errno);
  if (auto ec = utils::pwrite_all(tfd.get(), file, 0)) throw fail("cannot write", ec.value());
  // Durable before it becomes visible under the bitmap's name.
  if (::fsync(tfd.get()) != 0) throw fail("cannot fsync", errno);
  tfd.reset();
  FM_CRASH_POINT("rescale.before_rename");
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw fail("cannot rename over " + path, errno);
  FM_CRASH_POINT("rescale.after_rename");
  // The rename itself is durable only once the directory is.
  utils::UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd || ::fsync(dfd.get()) != 0) throw utils::sys_error(dir, "cannot fsync the directory", errno);
  return rep;
}

}  // namespace fusemirror::core
