#pragma once
// LruCache: at most `capacity` values by key; a value found or put becomes the most recently
// used, and putting one beyond the capacity evicts the least recently used. What a long-lived
// process (a campaign worker) keeps between tasks: bounded, so that a worker that meets many
// input files over thousands of tasks holds the latest few, not all of them.
//
//   LruCache<std::string, std::shared_ptr<const Data>> cache(4);
//   if (const auto* hit = cache.find(key)) return *hit;
//   cache.put(key, load(key));
//
// Not thread-safe: the owner locks.
#include <cstddef>
#include <iterator>
#include <list>
#include <map>
#include <utility>

namespace foldfarm {

template <class K, class V>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}

  // The value of `key`, now the most recently used; nullptr when absent. The pointer stays
  // valid until the entry is evicted or erased.
  V* find(const K& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    items_.splice(items_.begin(), items_, it->second);
    return &it->second->second;
  }

  // Inserts or replaces `key` as the most recently used, then evicts beyond the capacity.
  V& put(const K& key, V value) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second = std::move(value);
      items_.splice(items_.begin(), items_, it->second);
      return items_.front().second;
    }
    items_.emplace_front(key, std::move(value));
    index_.emplace(key, items_.begin());
    while (items_.size() > capacity_) {
      index_.erase(items_.back().first);
      items_.pop_back();
    }
    return items_.front().second;
  }

  // Erases every entry whose key satisfies `pred`.
  template <class Pred>
  void eraseIf(Pred pred) {
    for (auto it = items_.begin(); it != items_.end();) {
      if (pred(it->first)) {
        index_.erase(it->first);
        it = items_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void clear() {
    items_.clear();
    index_.clear();
  }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  using Items = std::list<std::pair<K, V>>;  // most recently used first
  size_t capacity_;
  Items items_;
  std::map<K, typename Items::iterator> index_;
};

}  // namespace foldfarm
