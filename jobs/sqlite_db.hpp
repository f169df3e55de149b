#pragma once
// One owner for a sqlite3* connection and one for each prepared statement. Every SQLite
// call goes through a check that throws foldfarm::Error carrying the call, the database
// path, file:line and SQLite's message.
//
// Thread-safety: a SqliteDb and its statements belong to one thread.
#include <cstdint>
#include <string>

#include "core/base/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace foldfarm::jobs {

class SqliteDb;

// What checkSqlite throws when SQLite finds the database file damaged (SQLITE_CORRUPT,
// SQLITE_NOTADB): a caller can say how to rebuild it rather than report an I/O failure.
class SqliteCorruptError : public Error {
 public:
  using Error::Error;
};

// Throws Error("<call> failed at file:line on <path> (host): <sqlite message>") when rc is
// not SQLITE_OK / SQLITE_ROW / SQLITE_DONE (SqliteCorruptError for a damaged file).
void checkSqlite(sqlite3* db, const std::string& path, int rc, const char* call, const char* file,
                 int line);

// A prepared statement (it refers to the connection handle, which stays put when the
// owning SqliteDb object is moved). Bind with 1-based indices, step() until it returns false,
// reset().
class SqliteStatement {
 public:
  SqliteStatement() = default;
  SqliteStatement(SqliteDb& db, const char* sql);
  ~SqliteStatement() noexcept;
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&& other) noexcept;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  SqliteStatement& bind(int i, int64_t v);
  SqliteStatement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  SqliteStatement& bind(int i, double v);
  SqliteStatement& bind(int i, const std::string& v);
  SqliteStatement& bindNull(int i);
  // true: a row is available; false: done. Throws on error.
  bool step();
  // Runs a statement that returns no rows, then resets it. Returns sqlite3_changes().
  int run();
  void reset();

  int64_t columnInt(int i) const;
  double columnDouble(int i) const;
  std::string columnText(int i) const;
  bool columnIsNull(int i) const;

 private:
  void check(int rc, const char* call, int line) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

class SqliteDb {
 public:
  // How a database is opened: read and written (created when missing with kCreate), only
  // read, or only read as the file is on disk, ignoring its write-ahead log and taking no
  // locks (SQLite's immutable=1: for a read-only file system, or a directory this user cannot
  // write, where SQLite cannot make the -shm file a reader of a WAL database needs).
  enum class Mode { kReadWrite, kCreate, kReadOnly, kImmutable };
  // Opens the database at `path`. Throws Error on failure.
  SqliteDb(const std::string& path, Mode mode);
  SqliteDb(const std::string& path, bool create)
      : SqliteDb(path, create ? Mode::kCreate : Mode::kReadWrite) {}
  ~SqliteDb() noexcept;
  SqliteDb(SqliteDb&& other) noexcept;
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  void exec(const std::string& sql);
  int changes() const;
  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }
  // Throws Error("<call> failed at file:line on <path>: <sqlite message>") when rc is not
  // one of SQLITE_OK / SQLITE_ROW / SQLITE_DONE.
  void check(int rc, const char* call, const char* file, int line) const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless commit() was called.
class SqliteTransaction {
 public:
  explicit SqliteTransaction(SqliteDb& db);
  ~SqliteTransaction() noexcept;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  void commit();

 private:
  SqliteDb& db_;
  bool done_ = false;
};

}  // namespace foldfarm::jobs

#define FF_SQLITE_CHECK(db, expr) (db).check((expr), #expr, __FILE__, __LINE__)
