#include "jobs/worker_protocol.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/error.hpp"

namespace foldfarm::jobs {

void appendFrame(std::string& out, std::string_view payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  char len[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                 static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
  out.append(len, 4);
  out.append(payload.data(), payload.size());
}

bool FrameReader::next(std::string& payload) {
  size_t avail = buf_.size() - pos_;
  if (avail < 4) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
  uint32_t n =
      uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
  if (n > (1u << 30))
    throw Error("worker protocol: frame of " + std::to_string(n) + " bytes (corrupt stream)");
  if (avail < 4 + size_t(n)) return false;
  payload.assign(buf_.data() + pos_ + 4, n);
  pos_ += 4 + n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 16) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return true;
}

bool writeAll(int fd, std::string_view bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == EBADF) return false;
      throwSystemError("write", __FILE__, __LINE__, "worker protocol");
    }
    off += static_cast<size_t>(w);
  }
  return true;
}

bool readFrameBlocking(int fd, FrameReader& reader, std::string& payload) {
  char buf[65536];
  while (!reader.next(payload)) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      throwSystemError("read", __FILE__, __LINE__, "worker protocol");
    }
    if (r == 0) return false;
    reader.feed(buf, static_cast<size_t>(r));
  }
  return true;
}

nlohmann::json doneMessageOf(const Completion& c) {
  nlohmann::json m{{"t", "done"},   {"i", c.index},       {"a", c.attempt},     {"s", c.status},
                   {"r", c.reason}, {"t0", c.started_at}, {"t1", c.finished_at}};
  if (!c.result.is_null()) m["res"] = c.result;
  if (!c.counts_as_failure) m[kNotAFailureKey] = true;
  return m;
}

Completion completionFromDoneMessage(nlohmann::json& m) {
  Completion c;
  c.index = m.at("i").get<int>();
  c.attempt = m.at("a").get<int>();
  c.status = m.at("s").get<int>();
  c.reason = m.value("r", "");
  c.started_at = m.value("t0", 0.0);
  c.finished_at = m.value("t1", 0.0);
  if (m.contains("res")) c.result = std::move(m["res"]);
  c.counts_as_failure = !m.value(kNotAFailureKey, false);
  return c;
}

}  // namespace foldfarm::jobs
