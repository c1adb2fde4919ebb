#include "core/image_table.hpp"

namespace fusemirror::core {

std::shared_ptr<Image> ImageTable::find(const std::string& rel) const {
  std::lock_guard lk(mu_);
  auto it = images_.find(rel);
  return it == images_.end() ? nullptr : it->second;
}

void ImageTable::insert(const std::string& rel, std::shared_ptr<Image> img) {
  std::lock_guard lk(mu_);
  images_[rel] = std::move(img);
}

void ImageTable::erase(const std::string& rel) {
  std::lock_guard lk(mu_);
  images_.erase(rel);
}

void ImageTable::rename(const std::string& from, const std::string& to, bool is_dir) {
  std::lock_guard lk(mu_);
  std::map<std::string, std::shared_ptr<Image>> moved;
  images_.erase(to);
  for (auto it = images_.begin(); it != images_.end();) {
    const std::string& k = it->first;
    if (k == from || (is_dir && k.rfind(from + "/", 0) == 0)) {
      std::string nk = to + k.substr(from.size());
      it->second->rename(nk);
      moved[nk] = it->second;
      it = images_.erase(it);
    } else {
      ++it;
    }
  }
  if (is_dir)
    for (auto it = images_.begin(); it != images_.end();)
      it = it->first.rfind(to + "/", 0) == 0 ? images_.erase(it) : std::next(it);
  images_.merge(moved);
}

std::vector<std::shared_ptr<Image>> ImageTable::snapshot() const {
  std::lock_guard lk(mu_);
  std::vector<std::shared_ptr<Image>> v;
  v.reserve(images_.size());
  for (auto& [_, img] : images_) v.push_back(img);
  return v;
}

std::size_t ImageTable::size() const {
  std::lock_guard lk(mu_);
  return images_.size();
}

}  // namespace fusemirror::core
