#include "jobs/sqlite_db.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm::jobs {
namespace {

// SQLite's message, and for a failed system call beneath it the system's reason: "disk I/O
// error" alone does not say that the disk is full or the directory read-only.
std::string sqliteMessage(sqlite3* db, int rc, const char* message) {
  std::string msg = message ? message : (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  const int primary = rc & 0xff;
  const int sys = db ? sqlite3_system_errno(db) : 0;
  if (sys != 0 && (primary == SQLITE_IOERR || primary == SQLITE_FULL ||
                   primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY))
    msg += std::string(" (") + std::strerror(sys) + ")";
  return msg;
}

// SqliteCorruptError for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), else Error.
[[noreturn]] void throwSqliteError(int rc, const std::string& msg) {
  const int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) throw SqliteCorruptError(msg);
  throw Error(msg);
}

}  // namespace

SqliteDb::SqliteDb(const std::string& path, Mode mode) : path_(path) {
  int flags = SQLITE_OPEN_NOMUTEX;
  std::string name = path;
  switch (mode) {
    case Mode::kReadWrite:
      flags |= SQLITE_OPEN_READWRITE;
      break;
    case Mode::kCreate:
      flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
      break;
    case Mode::kReadOnly:
      flags |= SQLITE_OPEN_READONLY;
      break;
    case Mode::kImmutable: {
      // A URI: the path percent-encoded where URI syntax would read it otherwise.
      flags |= SQLITE_OPEN_READONLY | SQLITE_OPEN_URI;
      name = "file:";
      for (const char c : path) {
        if (c == '%' || c == '?' || c == '#') {
          char hex[4];
          std::snprintf(hex, sizeof hex, "%%%02X", static_cast<unsigned char>(c));
          name += hex;
        } else {
          name += c;
        }
      }
      name += "?immutable=1";
      break;
    }
  }
  // SQLite creates the file 0644 (less the umask), never group-writable: made here first with
  // kNewFileMode, which its -wal and -shm files then take over.
  if (mode == Mode::kCreate && !path.empty() && path != ":memory:" && path.rfind("file:", 0) != 0)
    Fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kNewFileMode));
  int rc = sqlite3_open_v2(name.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = sqliteMessage(db_, rc, nullptr);
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    // SQLite takes paths of at most 512 bytes (made absolute, symbolic links resolved), its
    // side files' too: the rollback journal's name is 8 bytes more ("-journal").
    std::string absolute = path;
    if (!path.empty() && path[0] != '/') {
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd)) absolute = std::string(cwd) + "/" + path;
    }
    const size_t slash = absolute.rfind('/');
    if (slash != std::string::npos) {
      if (char* real = ::realpath(absolute.substr(0, slash).c_str(), nullptr)) {
        absolute = std::string(real) + absolute.substr(slash);
        std::free(real);
      }
    }
    throw Error(path + ": cannot open the campaign journal: " + msg +
                (absolute.size() + 8 > 512
                     ? " (its absolute path is " + std::to_string(absolute.size()) +
                           " bytes; SQLite takes at most 504 here: move the campaign to a "
                           "shorter path)"
                     : " (check the campaign directory and its permissions)"));
  }
  // Another process (a `status` reader) may hold a lock briefly: wait instead of failing.
  FF_SQLITE_CHECK(*this, sqlite3_busy_timeout(db_, 10000));
  FF_SQLITE_CHECK(*this, sqlite3_extended_result_codes(db_, 1));
}

namespace {

// Closes `db` (nullptr: nothing), logging a failure (a statement left unfinalised): never
// throws. sqlite3_close_v2 frees the handle once its last statement is finalised even then.
void closeLogged(sqlite3* db, const std::string& path) noexcept {
  if (db && sqlite3_close_v2(db) != SQLITE_OK)
    logWarn("closing journal {}: {}", path, sqlite3_errmsg(db));
}

}  // namespace

SqliteDb::~SqliteDb() noexcept {
  closeLogged(db_, path_);
}

SqliteDb::SqliteDb(SqliteDb&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& other) noexcept {
  if (this != &other) {
    closeLogged(db_, path_);
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

void checkSqlite(sqlite3* db, const std::string& path, int rc, const char* call, const char* file,
                 int line) {
  int primary = rc & 0xff;
  if (primary == SQLITE_OK || primary == SQLITE_ROW || primary == SQLITE_DONE) return;
  const std::string msg = std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                          " on " + path + " (" + hostName() +
                          "): " + sqliteMessage(db, rc, nullptr);
  throwSqliteError(rc, msg);
}

void SqliteDb::check(int rc, const char* call, const char* file, int line) const {
  checkSqlite(db_, path_, rc, call, file, line);
}

void SqliteStatement::check(int rc, const char* call, int line) const {
  checkSqlite(db_, path_, rc, call, __FILE__, line);
}

void SqliteDb::exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    const std::string msg = "sqlite3_exec(\"" + sql.substr(0, 60) + "\") failed on " + path_ +
                            " (" + hostName() + "): " + sqliteMessage(db_, rc, err);
    sqlite3_free(err);
    throwSqliteError(rc, msg);
  }
}

int SqliteDb::changes() const {
  return sqlite3_changes(db_);
}

SqliteStatement::SqliteStatement(SqliteDb& db, const char* sql)
    : db_(db.handle()), path_(db.path()), sql_(sql) {
  FF_SQLITE_CHECK(
      db, sqlite3_prepare_v3(db.handle(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr));
}

SqliteStatement::~SqliteStatement() noexcept {
  if (stmt_) sqlite3_finalize(stmt_);
}

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : db_(other.db_),
      path_(std::move(other.path_)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      sql_(std::move(other.sql_)) {}

SqliteStatement& SqliteStatement::operator=(SqliteStatement&& other) noexcept {
  if (this != &other) {
    if (stmt_) sqlite3_finalize(stmt_);
    db_ = other.db_;
    path_ = std::move(other.path_);
    stmt_ = std::exchange(other.stmt_, nullptr);
    sql_ = std::move(other.sql_);
  }
  return *this;
}

SqliteStatement& SqliteStatement::bind(int i, int64_t v) {
  check(sqlite3_bind_int64(stmt_, i, v), "sqlite3_bind_int64", __LINE__);
  return *this;
}
SqliteStatement& SqliteStatement::bind(int i, double v) {
  check(sqlite3_bind_double(stmt_, i, v), "sqlite3_bind_double", __LINE__);
  return *this;
}
SqliteStatement& SqliteStatement::bind(int i, const std::string& v) {
  check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT),
        "sqlite3_bind_text", __LINE__);
  return *this;
}
SqliteStatement& SqliteStatement::bindNull(int i) {
  check(sqlite3_bind_null(stmt_, i), "sqlite3_bind_null", __LINE__);
  return *this;
}

bool SqliteStatement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(stmt_);
  check(rc, sql_.c_str(), __LINE__);
  return false;
}

int SqliteStatement::run() {
  while (step()) {
  }
  int n = sqlite3_changes(db_);
  reset();
  return n;
}

void SqliteStatement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t SqliteStatement::columnInt(int i) const {
  return sqlite3_column_int64(stmt_, i);
}
double SqliteStatement::columnDouble(int i) const {
  return sqlite3_column_double(stmt_, i);
}
std::string SqliteStatement::columnText(int i) const {
  const unsigned char* t = sqlite3_column_text(stmt_, i);
  return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
}
bool SqliteStatement::columnIsNull(int i) const {
  return sqlite3_column_type(stmt_, i) == SQLITE_NULL;
}

SqliteTransaction::SqliteTransaction(SqliteDb& db) : db_(db) {
  db_.exec("BEGIN IMMEDIATE");
}

SqliteTransaction::~SqliteTransaction() noexcept {
  // A COMMIT that failed (disk full, I/O error) may have rolled back already: nothing to undo.
  if (done_ || sqlite3_get_autocommit(db_.handle()) != 0) return;
  char* err = nullptr;
  if (sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, &err) != SQLITE_OK) {
    logWarn("rolling back a journal transaction on {}: {}", db_.path(), err ? err : "?");
    sqlite3_free(err);
  }
}

void SqliteTransaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace foldfarm::jobs
