#include "core/image_table.hpp"

#include <algorithm>

namespace fusemirror::core {

std::shared_ptr<Image> ImageTable::find(const std::string& rel) const {
  std::lock_guard lk(mu_);
  auto it = images_.find(rel);
  if (it == images_.end() || !it->second.image) return nullptr;
  it->second.used = ++clock_;
  return it->second.image;
}

void ImageTable::insert(const std::string& rel, std::shared_ptr<Image> img) {
  std::lock_guard lk(mu_);
  Entry& e = images_[rel];
  e.image = std::move(img);
  e.summary = {};
  e.used = ++clock_;
}

void ImageTable::erase(const std::string& rel) {
  std::lock_guard lk(mu_);
  images_.erase(rel);
}

void ImageTable::rename(const std::string& from, const std::string& to, bool is_dir) {
  std::lock_guard lk(mu_);
  std::map<std::string, Entry> moved;
  images_.erase(to);
  for (auto it = images_.begin(); it != images_.end();) {
    const std::string& k = it->first;
    if (k == from || (is_dir && k.rfind(from + "/", 0) == 0)) {
      std::string nk = to + k.substr(from.size());
      if (it->second.image) it->second.image->rename(nk);
      else it->second.summary.name = nk;
      moved[nk] = std::move(it->second);
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
  for (auto& [_, e] : images_)
    if (e.image) v.push_back(e.image);
  return v;
}

std::vector<std::pair<std::shared_ptr<Image>, ImageStatus>> ImageTable::listing() const {
  std::lock_guard lk(mu_);
  std::vector<std::pair<std::shared_ptr<Image>, ImageStatus>> v;
  v.reserve(images_.size());
  for (auto& [_, e] : images_) v.emplace_back(e.image, e.image ? ImageStatus{} : e.summary);
  return v;
}

std::optional<ImageStatus> ImageTable::summary(const std::string& rel) const {
  std::lock_guard lk(mu_);
  auto it = images_.find(rel);
  if (it == images_.end() || it->second.image) return std::nullopt;
  return it->second.summary;
}

std::size_t ImageTable::size() const {
  std::lock_guard lk(mu_);
  return images_.size();
}

std::size_t ImageTable::loaded() const {
  std::lock_guard lk(mu_);
  return static_cast<std::size_t>(
      std::count_if(images_.begin(), images_.end(), [](const auto& kv) { return kv.second.image != nullptr; }));
}

std::vector<std::string> ImageTable::least_recently_used(std::size_t n) const {
  std::lock_guard lk(mu_);
  std::vector<std::pair<std::uint64_t, const std::string*>> v;
  for (auto& [k, e] : images_)
    if (e.image) v.emplace_back(e.used, &k);
  n = std::min(n, v.size());
  std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), v.end());
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(*v[i].second);
  return out;
}

std::shared_ptr<Image> ImageTable::take_idle(const std::string& rel,
                                             const std::function<bool(const Image&, ImageStatus*)>& idle) {
  std::lock_guard lk(mu_);
  auto it = images_.find(rel);
  if (it == images_.end() || !it->second.image || it->second.image.use_count() != 1) return nullptr;
  ImageStatus s;
  if (!idle(*it->second.image, &s)) return nullptr;
  it->second.summary = std::move(s);
  return std::move(it->second.image);
}

void ImageTable::insert_unloaded(const std::string& rel, ImageStatus s) {
  std::lock_guard lk(mu_);
  Entry& e = images_[rel];
  e.image.reset();
  e.summary = std::move(s);
}

void ImageTable::set_summary(const std::string& rel, ImageStatus s) {
  std::lock_guard lk(mu_);
  auto it = images_.find(rel);
  if (it != images_.end() && !it->second.image) it->second.summary = std::move(s);
}

}  // namespace fusemirror::core
