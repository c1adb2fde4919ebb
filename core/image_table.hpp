// core/image_table.hpp — the set's loaded images by relative path.
//
// Owns the map and its mutex, nothing else: loading an image (and its trust decision) is
// core/image_loader's job, namespace changes are core/namespace's.
//
// Thread safety: every member may be called concurrently; mu_ is a leaf lock.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/image.hpp"

namespace fusemirror::core {

class ImageTable {
 public:
  std::shared_ptr<Image> find(const std::string& rel) const;
  void insert(const std::string& rel, std::shared_ptr<Image> img);
  void erase(const std::string& rel);
  // After a rename of FROM to TO (a directory when `is_dir`): every image at or beneath FROM
  // moves (and is renamed), and whatever was at or beneath TO is dropped.
  void rename(const std::string& from, const std::string& to, bool is_dir);
  std::vector<std::shared_ptr<Image>> snapshot() const;
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Image>> images_;  // guarded by mu_
};

}  // namespace fusemirror::core
