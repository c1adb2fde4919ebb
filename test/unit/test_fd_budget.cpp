// Unit tests for the descriptor budget (issue 12 §3): idle images beyond the budget are
// closed clean and still listed; a create that fails for want of descriptors leaves nothing
// on the primary, the secondary or the bitmap directory (core/image_loader.hpp).
#include <dirent.h>
#include <sys/resource.h>

#include <doctest/doctest.h>

#include "core/image_loader.hpp"
#include "core/namespace.hpp"
#include "test_helpers.hpp"
#include "utils/uuid.hpp"

using namespace fusemirror;
using fmtest::TempDir;

namespace {

// The set's core units over three temporary directories, as MirrorSet assembles them.
struct MiniSet {
  TempDir t;
  core::Config config;
  core::Legs legs;
  core::ImageTable table;
  std::unique_ptr<core::SecondaryRecords> records;
  core::ResyncEngine resync{1 << 20, 0};
  utils::ThreadPool pool{4};
  std::unique_ptr<core::ImageLoader> loader;
  std::unique_ptr<core::Namespace> ns;

  explicit MiniSet(std::size_t budget) {
    for (const char* d : {"p", "s", "s/.fusemirror", "s/.fusemirror/images", "b"})
      REQUIRE(::mkdir((t / d).c_str(), 0700) == 0);
    config.uuid = utils::random_uuid();
    config.primary = t / "p";
    config.secondary = t / "s";
    for (auto [dir, rel] : {std::pair{&legs.primary, "p"}, {&legs.secondary, "s"}, {&legs.bitmaps, "b"}}) {
      auto d = core::Dir::open(t / rel);
      REQUIRE(d);
      *dir = std::move(*d);
    }
    records = std::make_unique<core::SecondaryRecords>(legs, config.uuid);
    loader = std::make_unique<core::ImageLoader>(config, legs, *records, table, resync, &pool, nullptr);
    loader->set_budget(budget);
    ns = std::make_unique<core::Namespace>(legs, table, *records, *loader);
  }
  // Regular files in DIR (relative to the temp dir), recursively, metadata excluded.
  std::size_t files(const std::string& dir) const {
    std::size_t n = 0;
    for (auto& e : fmtest::stdfs::recursive_directory_iterator(t / dir))
      if (e.is_regular_file() && e.path().string().find("/.fusemirror/") == std::string::npos) ++n;
    return n;
  }
};

std::size_t open_fds() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory's own
}

}  // namespace

TEST_CASE("budget: three descriptors per image (four with checksums), a reserve for the rest") {
  CHECK(core::ImageLoader::budget_for(20000, 0, 4) == (20000 - 512) / 4);
  CHECK(core::ImageLoader::budget_for(20000, 0) == (20000 - 512) / 3);
  CHECK(core::ImageLoader::budget_for(1024, 0) == (1024 - 512) / 3);
  CHECK(core::ImageLoader::budget_for(64, 0) == (64 - 32) / 3);
  CHECK(core::ImageLoader::budget_for(20000, 100) == 100);        // the config's key, when lower
  CHECK(core::ImageLoader::budget_for(64, 1000) == (64 - 32) / 3); // never above the limit's
  CHECK(core::ImageLoader::budget_for(2, 0) == 1);
}

TEST_CASE("budget: idle images beyond it are closed clean, listed, and reload without a resync") {
  MiniSet s(4);
  const std::size_t base = open_fds();
  for (int i = 0; i < 20; ++i) {
    auto img = s.ns->create_image("img" + std::to_string(i), 0600, -1, -1);
    REQUIRE(img);
    REQUIRE_FALSE((*img)->write(std::as_bytes(std::span("data", 4)), 0).error());
  }
  CHECK(s.table.loaded() <= 4);
  CHECK(s.table.size() == 20);
  // primary, secondary, bitmap, checksums, the activity log's record, the primary's
  // O_DIRECT reader (direct_reads) and each leg's O_DIRECT writer (direct_write_max)
  CHECK(open_fds() <= base + 4 * 8);
  auto sum = s.table.summary("img0");
  REQUIRE(sum);
  CHECK(sum->state == "clean");
  CHECK(sum->size == 4);
  CHECK(sum->bitmap.dirty_chunks == 0);
  // Listed in name order, loaded and evicted alike.
  auto all = s.table.listing();
  REQUIRE(all.size() == 20);
  // Reloading trusts the clean bitmap and the clean record: nothing to copy again.
  auto again = s.ns->open_image("img0");
  REQUIRE(again);
  CHECK((*again)->bitmap()->stats().unsynced_chunks == 0);
  CHECK((*again)->secondary_ok());
  CHECK(fmtest::read_bytes(s.t / "s/img0").size() == 4);
  // Renames and unlinks reach evicted entries too.
  REQUIRE_FALSE(s.ns->rename("img1", "moved1", 0));
  CHECK(s.table.summary("moved1"));
  CHECK(s.table.summary("moved1")->name == "moved1");
  CHECK_FALSE(s.table.summary("img1"));
  REQUIRE_FALSE(s.ns->unlink("img2"));
  CHECK(s.table.size() == 19);
}

TEST_CASE("budget: an image someone holds is never evicted") {
  MiniSet s(2);
  std::vector<std::shared_ptr<core::Image>> held;
  for (int i = 0; i < 5; ++i) {
    auto img = s.ns->create_image("held" + std::to_string(i), 0600, -1, -1);
    REQUIRE(img);
    held.push_back(*img);
  }
  CHECK(s.table.loaded() == 5);  // over the budget, but every one is in use
  {
    auto lk = s.ns->lock_exclusive();
    CHECK(s.loader->evict_idle(2) == 0);
  }
  held.resize(1);
  {
    auto lk = s.ns->lock_exclusive();
    CHECK(s.loader->evict_idle(2) == 3);
  }
  CHECK(s.table.loaded() == 2);
  CHECK(s.table.find("held0"));
}

TEST_CASE("a create that runs out of descriptors leaves nothing behind") {
  MiniSet s(1000);
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  int failures = 0;
  std::size_t made = 0;
  // Every limit from "nothing can be opened" up to "the create succeeds": each step fails
  // one operation later in the create (primary, secondary copy, bitmap, record...).
  for (int extra = 0; extra < 16; ++extra) {
    const std::string name = "try" + std::to_string(extra);
    struct rlimit tight = old;
    tight.rlim_cur = open_fds() + static_cast<rlim_t>(extra);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    auto img = s.ns->create_image(name, 0600, -1, -1);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    if (img) {
      ++made;
      break;
    }
    ++failures;
    CHECK(img.error() == std::errc::too_many_files_open);
    INFO("limit: " << extra << " descriptors free");
    CHECK_FALSE(fmtest::stdfs::exists(s.t / ("p/" + name)));
    CHECK_FALSE(fmtest::stdfs::exists(s.t / ("s/" + name)));
    CHECK(s.files("b") == 3 * made);  // bitmap, checksum file, activity log record
    CHECK(s.files("s") == made);
    CHECK_FALSE(s.table.find(name));
  }
  CHECK(failures > 2);
  CHECK(made == 1);
  CHECK(s.files("p") == 1);
  CHECK(s.files("s") == 1);
  CHECK(s.files("b") == 3);
}
