#include "jobs/journal.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <optional>

#include "core/base/error.hpp"
#include "core/base/log.hpp"

namespace foldfarm::jobs {
namespace {

constexpr const char* kSchemaVersion = "1";

// The task graph's edges (a task needs another done first). Schema "1" journals made before
// the graph existed (foldfarm builds before 2026-11-29, commit 9fb798e) lack the table, and
// those made before 2026-12-04 (49983dd) its index: a writer adds them (upgradeSchema), a
// reader takes a missing table for no edges (graph()).
constexpr const char* kNeedsTable =
    "CREATE TABLE IF NOT EXISTS needs(task_idx INTEGER NOT NULL REFERENCES tasks(idx), "
    "needs_idx INTEGER NOT NULL REFERENCES tasks(idx), PRIMARY KEY(task_idx, needs_idx));"
    "CREATE INDEX IF NOT EXISTS needs_need ON needs(needs_idx);";

static_assert(kEventLeaseRefused == -2, "kTaskColumns names it as -2");
constexpr const char* kTaskColumns =
    "idx, id, replica, member, state, attempts, failures, host, slot, external_id, exit_code, "
    "reason, started_at, finished_at, not_before, ingested, result, "
    // The attempt at which `campaign retry` (--failed or --cancelled) or `campaign
    // accept-inputs` (a done task) last gave the task a fresh start.
    "COALESCE((SELECT MAX(attempt) FROM events WHERE task_idx=tasks.idx AND "
    "from_state IN ('failed','cancelled','done') AND to_state='pending'), 0), "
    // Attempts since then that ended without a result of their own (running -> interrupted
    // other than the task's own exit 75: its job or worker ended first).
    "(SELECT COUNT(*) FROM events e WHERE e.task_idx=tasks.idx AND e.from_state='running' AND "
    "e.to_state='interrupted' AND COALESCE(e.exit_code, -1) NOT IN (75, -2) AND e.seq > "
    "COALESCE((SELECT MAX(seq) FROM events WHERE task_idx=tasks.idx AND from_state IN "
    "('failed','cancelled','done') AND to_state='pending'), 0))";

TaskRecord readTask(SqliteStatement& st) {
  TaskRecord t;
  t.index = static_cast<int>(st.columnInt(0));
  t.id = st.columnText(1);
  t.replica = static_cast<int>(st.columnInt(2));
  t.member = static_cast<int>(st.columnInt(3));
  auto s = parseTaskState(st.columnText(4));
  if (!s) throw Error("journal: task " + t.id + " has unknown state '" + st.columnText(4) + "'");
  t.state = *s;
  t.attempts = static_cast<int>(st.columnInt(5));
  t.failures = static_cast<int>(st.columnInt(6));
  t.host = st.columnText(7);
  t.slot = st.columnIsNull(8) ? -1 : static_cast<int>(st.columnInt(8));
  t.external_id = st.columnText(9);
  t.exit_code = st.columnIsNull(10) ? -1 : static_cast<int>(st.columnInt(10));
  t.reason = st.columnText(11);
  t.started_at = st.columnDouble(12);
  t.finished_at = st.columnDouble(13);
  t.not_before = st.columnDouble(14);
  t.ingested = static_cast<int>(st.columnInt(15));
  if (!st.columnIsNull(16)) {
    std::string r = st.columnText(16);
    if (!r.empty()) t.result = nlohmann::json::parse(r, nullptr, false);
  }
  t.retried_at_attempt = static_cast<int>(st.columnInt(17));
  t.lost_since_retry = static_cast<int>(st.columnInt(18));
  return t;
}

std::string str(TaskState s) {
  return std::string(toString(s));
}

}  // namespace

double wallClockNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

CampaignJournal::CampaignJournal(SqliteDb db) : db_(std::move(db)) {}

void CampaignJournal::prepare() {
  db_.exec("PRAGMA journal_mode=WAL");
  // FULL: a committed transition survives power loss, not only a process crash.
  db_.exec("PRAGMA synchronous=FULL");
  db_.exec("PRAGMA foreign_keys=ON");
}

void CampaignJournal::prepareStatements() {
  insert_event_ = SqliteStatement(
      db_,
      "INSERT INTO events(task_idx, attempt, from_state, to_state, at, host, slot, exit_code, "
      "reason) VALUES(?,?,?,?,?,?,?,?,?)");
}

CampaignJournal CampaignJournal::create(const std::string& path,
                                        const std::vector<TaskDef>& tasks) {
  CampaignJournal j(SqliteDb(path, true));
  j.prepare();
  j.db_.exec(
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE tasks(idx INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, replica INTEGER "
      "NOT NULL, member INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL "
      "DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, host TEXT, slot INTEGER, external_id "
      "TEXT, exit_code INTEGER, reason TEXT, started_at REAL NOT NULL DEFAULT 0, finished_at "
      "REAL NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0, ingested INTEGER NOT NULL "
      "DEFAULT 0, result TEXT);"
      "CREATE INDEX tasks_state ON tasks(state);"
      "CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, task_idx INTEGER NOT NULL "
      "REFERENCES tasks(idx), attempt INTEGER NOT NULL, from_state TEXT, to_state TEXT NOT "
      "NULL, at REAL NOT NULL, host TEXT, slot INTEGER, exit_code INTEGER, reason TEXT);"
      "CREATE INDEX events_task ON events(task_idx);");
  j.db_.exec(kNeedsTable);
  j.prepareStatements();
  SqliteTransaction txn(j.db_);
  j.insertPendingTasks(tasks, "created");
  SqliteStatement meta(j.db_, "INSERT INTO meta(key, value) VALUES(?,?)");
  meta.bind(1, std::string("schema")).bind(2, std::string(kSchemaVersion)).run();
  txn.commit();
  return j;
}

void CampaignJournal::insertPendingTasks(const std::vector<TaskDef>& tasks,
                                         const std::string& reason) {
  SqliteStatement ins(db_, "INSERT INTO tasks(idx, id, replica, member, state) VALUES(?,?,?,?,?)");
  SqliteStatement need(db_, "INSERT INTO needs(task_idx, needs_idx) VALUES(?,?)");
  const double now = wallClockNow();
  for (const TaskDef& t : tasks) {
    ins.bind(1, t.index)
        .bind(2, t.id)
        .bind(3, t.replica)
        .bind(4, t.member)
        .bind(5, str(TaskState::kPending))
        .run();
    insertEvent(t.index, 0, TaskState::kPending, TaskState::kPending, now, "", -1, -1, reason);
    // Needs point to lower indices, whose rows exist already (tasks come in index order).
    for (int n : t.needs) {
      if (n < 0 || n >= t.index)
        throw Error("journal: task " + t.id + " needs task " + std::to_string(n) +
                    ", which does not come before it");
      need.bind(1, t.index).bind(2, n).run();
    }
  }
}

namespace {

// Throws InputError when there is no journal at `path`, SqliteCorruptError for an empty file
// (a full disk, a copy cut short): SQLite would take it for a new database, and the pragmas
// would write one.
void requireJournalFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw InputError(path +
                     ": no campaign journal here; create the campaign with "
                     "`foldfarm campaign init SPEC --dir D`");
  }
  if (S_ISREG(st.st_mode) && st.st_size == 0) throw SqliteCorruptError(path + ": empty file");
}

}  // namespace

CampaignJournal CampaignJournal::openToRead(const std::string& path) {
  requireJournalFile(path);
  // As a writer opens it where this user can write (closing it then checkpoints and removes
  // its write-ahead log, as before); else only to read; else as the file is on disk. A reader
  // of a WAL database needs the -shm file, which SQLite cannot make where this user cannot
  // write (before: "unable to open database file (No such file or directory)" for a file that
  // exists, "attempt to write a readonly database", "disk I/O error").
  const auto schemaOf = [&](CampaignJournal& j) {
    SqliteStatement st(j.db_, "SELECT value FROM meta WHERE key='schema'");
    return st.step() ? st.columnText(0) : std::string();
  };
  std::string schema;
  std::optional<CampaignJournal> opened;
  std::exception_ptr first;
  std::string first_reason;
  for (const SqliteDb::Mode mode :
       {SqliteDb::Mode::kReadWrite, SqliteDb::Mode::kReadOnly, SqliteDb::Mode::kImmutable}) {
    try {
      CampaignJournal j(SqliteDb(path, mode));
      if (mode == SqliteDb::Mode::kReadWrite) j.prepare();
      schema = schemaOf(j);
      opened.emplace(std::move(j));
    } catch (const SqliteCorruptError&) {
      throw;
    } catch (const Error& e) {
      if (!first) {
        first = std::current_exception();
        first_reason = e.what();
      }
      continue;
    }
    if (mode == SqliteDb::Mode::kImmutable) {
      struct stat wal {};
      if (::stat((path + "-wal").c_str(), &wal) == 0 && wal.st_size > 0)
        logWarn(
            "{}: read as it is on disk ({}); its write-ahead log holds changes that need write "
            "access to read, so the last task changes may be missing",
            path, first_reason);
      else
        logDebug("{}: read as it is on disk ({})", path, first_reason);
    }
    break;
  }
  if (!opened) std::rethrow_exception(first);  // the first reason: it names the system's
  if (schema != kSchemaVersion) {
    throw InputError(path + ": not a foldfarm campaign journal (schema '" + schema +
                     "', expected " + kSchemaVersion + ")");
  }
  opened->prepareStatements();
  return std::move(*opened);
}

CampaignJournal CampaignJournal::open(const std::string& path) {
  CampaignJournal j = openAsFound(path);
  j.upgradeSchema();
  return j;
}

CampaignJournal CampaignJournal::openAsFound(const std::string& path) {
  requireJournalFile(path);
  CampaignJournal j(SqliteDb(path, false));
  j.prepare();
  if (j.meta("schema") != kSchemaVersion) {
    throw InputError(path + ": not a foldfarm campaign journal (schema '" + j.meta("schema") +
                     "', expected " + kSchemaVersion + ")");
  }
  j.prepareStatements();
  return j;
}

void CampaignJournal::upgradeSchema() {
  {
    SqliteStatement has(db_,
                        "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('table','index') AND "
                        "name IN ('needs','needs_need')");
    if (has.step() && has.columnInt(0) == 2) return;
  }
  // A campaign made by an older build: none of its tasks needs another (its spec could give
  // no graph), so the empty table is the graph it has. One transaction: another writer
  // (a build of either age) sees the journal before or after, never half made.
  SqliteTransaction txn(db_);
  db_.exec(kNeedsTable);
  txn.commit();
}

std::string CampaignJournal::meta(const std::string& key) {
  std::string v;
  try {  // "" also when there is no meta table (an SQLite file that is no journal)
    SqliteStatement st(db_, "SELECT value FROM meta WHERE key=?");
    st.bind(1, key);
    if (st.step()) v = st.columnText(0);
  } catch (const SqliteCorruptError&) {
    throw;
  } catch (const Error&) {
    return "";
  }
  return v;
}

std::string CampaignJournal::integrityProblem() {
  try {
    SqliteStatement check(db_, "PRAGMA integrity_check");
    std::string first;
    if (check.step()) first = check.columnText(0);
    if (first != "ok") return "integrity check: " + first;
    (void)tasks();
    forEachEvent([](const Event&) {});
    (void)graph();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

bool CampaignJournal::setPendingAttempts(int index, int attempts, const std::string& reason) {
  SqliteStatement up(db_, "UPDATE tasks SET attempts=?, reason=? WHERE idx=? AND state='pending'");
  return up.bind(1, attempts).bind(2, reason).bind(3, index).run() == 1;
}

void CampaignJournal::setMeta(const std::string& key, const std::string& value) {
  SqliteStatement st(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)");
  st.bind(1, key).bind(2, value).run();
}

void CampaignJournal::insertEvent(int index, int attempt, TaskState from, TaskState to, double at,
                                  const std::string& host, int slot, int exit_code,
                                  const std::string& reason) {
  // Every transition is recorded here, so this is the one place that checks it against the
  // table; the "created" event (pending -> pending, attempt 0) is the only other entry.
  const bool creation = from == TaskState::kPending && to == TaskState::kPending && attempt == 0;
  if (!creation) requireTransition(from, to, std::to_string(index));
  insert_event_.bind(1, index).bind(2, attempt).bind(3, str(from)).bind(4, str(to)).bind(5, at);
  if (host.empty())
    insert_event_.bindNull(6);
  else
    insert_event_.bind(6, host);
  if (slot < 0)
    insert_event_.bindNull(7);
  else
    insert_event_.bind(7, slot);
  if (exit_code == -1)  // none; kEventLeaseRefused is kept
    insert_event_.bindNull(8);
  else
    insert_event_.bind(8, exit_code);
  if (reason.empty())
    insert_event_.bindNull(9);
  else
    insert_event_.bind(9, reason);
  insert_event_.run();
}

std::vector<TaskRecord> CampaignJournal::tasks(std::optional<TaskState> state) {
  // One statement: the records of one moment.
  std::string sql = std::string("SELECT ") + kTaskColumns + " FROM tasks" +
                    (state ? " WHERE state=?" : "") + " ORDER BY idx";
  SqliteStatement st(db_, sql.c_str());
  if (state) st.bind(1, str(*state));
  std::vector<TaskRecord> out;
  while (st.step()) out.push_back(readTask(st));
  return out;
}

void CampaignJournal::forEachTask(const std::function<void(TaskRecord&)>& fn,
                                  std::optional<TaskState> state) {
  // In pages of kPage rows, each read by a statement finished before `fn` sees its rows: a
  // read held open while a slow consumer takes the rows (`status --tasks | less`) would keep
  // the WAL from being checkpointed under a running campaign, and `fn` may use the journal.
  constexpr int kPage = 4096;
  const std::string sql = std::string("SELECT ") + kTaskColumns + " FROM tasks WHERE idx > ?" +
                          (state ? " AND state=?" : "") + " ORDER BY idx LIMIT " +
                          std::to_string(kPage);
  std::vector<TaskRecord> page;
  int64_t after = -1;
  do {
    page.clear();
    {
      SqliteStatement st(db_, sql.c_str());
      st.bind(1, after);
      if (state) st.bind(2, str(*state));
      while (st.step()) page.push_back(readTask(st));
    }
    for (TaskRecord& t : page) {
      after = t.index;
      fn(t);
    }
  } while (page.size() == static_cast<size_t>(kPage));
}

std::optional<TaskRecord> CampaignJournal::task(const std::string& id) {
  std::string sql = std::string("SELECT ") + kTaskColumns + " FROM tasks WHERE id=?";
  SqliteStatement st(db_, sql.c_str());
  st.bind(1, id);
  if (st.step()) return readTask(st);
  return std::nullopt;
}

StateCounts CampaignJournal::counts() {
  StateCounts c;
  for (TaskState s : {TaskState::kPending, TaskState::kRunning, TaskState::kDone,
                      TaskState::kFailed, TaskState::kInterrupted, TaskState::kCancelled}) {
    c[s] = 0;
  }
  SqliteStatement st(db_, "SELECT state, COUNT(*) FROM tasks GROUP BY state");
  while (st.step()) {
    auto s = parseTaskState(st.columnText(0));
    if (s) c[*s] = static_cast<int>(st.columnInt(1));
  }
  return c;
}

int CampaignJournal::numTasks() {
  SqliteStatement st(db_, "SELECT COUNT(*) FROM tasks");
  st.step();
  return static_cast<int>(st.columnInt(0));
}

int CampaignJournal::longestTaskId() {
  SqliteStatement st(db_, "SELECT COALESCE(MAX(LENGTH(id)), 0) FROM tasks");
  st.step();
  return static_cast<int>(st.columnInt(0));
}

TaskGraph CampaignJournal::graph() {
  {
    SqliteStatement has(db_,
                        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND "
                        "name='needs'");
    if (!has.step() || has.columnInt(0) == 0) return TaskGraph();
  }
  std::vector<std::pair<int, int>> edges;
  SqliteStatement st(db_, "SELECT task_idx, needs_idx FROM needs ORDER BY task_idx, needs_idx");
  while (st.step())
    edges.emplace_back(static_cast<int>(st.columnInt(0)), static_cast<int>(st.columnInt(1)));
  return TaskGraph(numTasks(), edges);
}

std::vector<TaskState> CampaignJournal::states() {
  std::vector<TaskState> out(static_cast<size_t>(numTasks()), TaskState::kPending);
  SqliteStatement st(db_, "SELECT idx, state FROM tasks");
  while (st.step()) {
    const auto s = parseTaskState(st.columnText(1));
    if (!s) throw Error("journal: task " + std::to_string(st.columnInt(0)) + " has unknown state");
    out[static_cast<size_t>(st.columnInt(0))] = *s;
  }
  return out;
}

int CampaignJournal::eventCount(int index) {
  SqliteStatement st(db_, index < 0 ? "SELECT COUNT(*) FROM events"
                                    : "SELECT COUNT(*) FROM events WHERE task_idx=?");
  if (index >= 0) st.bind(1, index);
  st.step();
  return static_cast<int>(st.columnInt(0));
}

void CampaignJournal::forEachEvent(const std::function<void(const Event&)>& fn) {
  SqliteStatement st(db_,
                     "SELECT seq, task_idx, attempt, from_state, to_state, at, host, slot, "
                     "exit_code, reason FROM events ORDER BY seq");
  auto state = [](const std::string& text, int64_t seq) {
    auto v = parseTaskState(text);
    if (!v)
      throw Error("journal: event " + std::to_string(seq) + " has unknown state '" + text + "'");
    return *v;
  };
  Event e;
  while (st.step()) {
    e.seq = st.columnInt(0);
    e.task = static_cast<int>(st.columnInt(1));
    e.attempt = static_cast<int>(st.columnInt(2));
    e.from = st.columnIsNull(3) ? std::nullopt
                                : std::optional<TaskState>(state(st.columnText(3), e.seq));
    e.to = state(st.columnText(4), e.seq);
    e.at = st.columnDouble(5);
    e.host = st.columnIsNull(6) ? "" : st.columnText(6);
    e.slot = st.columnIsNull(7) ? -1 : static_cast<int>(st.columnInt(7));
    e.exit_code = st.columnIsNull(8) ? -1 : static_cast<int>(st.columnInt(8));
    e.reason = st.columnIsNull(9) ? "" : st.columnText(9);
    fn(e);
  }
}

int CampaignJournal::markRunning(std::vector<Dispatch>& dispatches) {
  if (dispatches.empty()) return 0;
  SqliteTransaction txn(db_);
  SqliteStatement up(db_,
                     "UPDATE tasks SET state='running', attempts=attempts+1, host=?, slot=?, "
                     "external_id=?, started_at=?, finished_at=0 WHERE idx=? AND state='pending' "
                     "RETURNING attempts");
  double now = wallClockNow();
  int moved = 0;
  for (auto& d : dispatches) {
    up.bind(1, d.host);
    if (d.slot < 0)
      up.bindNull(2);
    else
      up.bind(2, d.slot);
    if (d.external_id.empty())
      up.bindNull(3);
    else
      up.bind(3, d.external_id);
    up.bind(4, now).bind(5, d.index);
    d.attempt = 0;
    if (up.step()) d.attempt = static_cast<int>(up.columnInt(0));
    up.reset();
    if (d.attempt > 0) {
      ++moved;
      insertEvent(d.index, d.attempt, TaskState::kPending, TaskState::kRunning, now, d.host, d.slot,
                  -1, d.external_id);
    }
  }
  txn.commit();
  return moved;
}

int CampaignJournal::reserveAttempts(const std::vector<std::pair<int, int>>& index_attempts) {
  if (index_attempts.empty()) return 0;
  SqliteTransaction txn(db_);
  SqliteStatement up(db_,
                     "UPDATE tasks SET attempts=? WHERE idx=? AND attempts<? AND state IN "
                     "('pending','failed','cancelled')");
  int changed = 0;
  for (const auto& [idx, attempt] : index_attempts) {
    changed += up.bind(1, attempt).bind(2, idx).bind(3, attempt).run();
  }
  txn.commit();
  return changed;
}

int CampaignJournal::recordCompletions(const std::vector<Completion>& completions,
                                       const RetryPolicy& retry, std::vector<Applied>* out) {
  if (completions.empty()) return 0;
  SqliteTransaction txn(db_);
  SqliteStatement get(db_,
                      "SELECT failures, started_at FROM tasks WHERE idx=? AND state='running' AND "
                      "attempts=?");
  SqliteStatement done(db_,
                       "UPDATE tasks SET state='done', exit_code=?, reason=NULL, host=?, slot=?, "
                       "started_at=?, finished_at=?, result=?, ingested=ingested+1 WHERE idx=? "
                       "AND state='running' AND attempts=?");
  SqliteStatement again(db_,
                        "UPDATE tasks SET state=?, failures=?, exit_code=?, reason=?, "
                        "finished_at=?, not_before=? WHERE idx=? AND state='running' AND "
                        "attempts=?");
  // Self-interruptions since the task was last given a fresh start (`campaign retry`).
  const std::string stops_sql =
      "SELECT COUNT(*) FROM events e WHERE e.task_idx=?1 AND e.to_state='interrupted' AND "
      "e.exit_code=" +
      std::to_string(kExitInterrupted) +
      " AND e.seq > COALESCE((SELECT MAX(seq) FROM events WHERE task_idx=?1 AND "
      "from_state IN ('failed','cancelled') AND to_state='pending'), 0)";
  SqliteStatement stops(db_, stops_sql.c_str());
  double now = wallClockNow();
  int applied = 0;
  for (const auto& c : completions) {
    get.bind(1, c.index).bind(2, c.attempt);
    bool running = get.step();
    int failures = running ? static_cast<int>(get.columnInt(0)) : 0;
    const double dispatched = running ? get.columnDouble(1) : 0;
    get.reset();
    if (!running) continue;  // stale or duplicate: ingested already
    double finished = c.finished_at > 0 ? c.finished_at : now;
    // The events' time: when the attempt ended, but never before its dispatch, so that a
    // task's events stay in order. A result this attempt took over (a run by hand that
    // finished first) keeps that run's times in the row; another node's clock may lag ours.
    const double at = std::max(finished, dispatched);
    if (c.status == 0) {
      done.bind(1, 0).bind(2, c.host);
      if (c.slot < 0)
        done.bindNull(3);
      else
        done.bind(3, c.slot);
      done.bind(4, c.started_at).bind(5, finished);
      if (c.result.is_null())
        done.bindNull(6);
      else
        done.bind(6, c.result.dump());
      done.bind(7, c.index).bind(8, c.attempt);
      if (done.run() == 1) {
        // A done attempt's reason is empty, or says that an earlier attempt did the work.
        insertEvent(c.index, c.attempt, TaskState::kRunning, TaskState::kDone, at, c.host, c.slot,
                    0, c.reason);
        if (out) out->push_back({c.index, TaskState::kDone, 0});
        ++applied;
      }
      continue;
    }
    TaskState final_state;
    double not_before = 0;
    bool interrupted = c.status == kExitInterrupted || !c.counts_as_failure;
    std::string reason =
        c.reason.empty() ? std::string("exit ") + std::to_string(c.status) : c.reason;
    if (interrupted && c.status == kExitInterrupted && c.counts_as_failure) {
      // The task stopped itself: count its earlier self-interruptions (the event log's
      // running -> interrupted with exit 75); at the cap it ends failed instead of looping.
      stops.bind(1, c.index);
      const int64_t earlier = stops.step() ? stops.columnInt(0) : 0;
      stops.reset();
      if (earlier + 1 >= retry.max_interruptions) {
        interrupted = false;
        reason = "interrupted " + std::to_string(earlier + 1) +
                 " times (exit 75; retry.max_interruptions = " +
                 std::to_string(retry.max_interruptions) +
                 "): raise the cap or the time limit, or see the task log; last: " + reason;
      }
    }
    if (interrupted) {
      final_state = TaskState::kPending;
      // An attempt that found the lease held by another attempt's processes: retried after
      // the backoff (its wait for the lease was spent already), however often.
      if (c.status == kExitInterrupted && !c.counts_as_failure && retry.backoff_s > 0)
        not_before = now + retry.backoff_s;
    } else if (c.status == kExitInterrupted) {
      final_state = TaskState::kFailed;
    } else {
      ++failures;
      // Bad input, or a need's output lost (66): another attempt would fail alike.
      if (c.status == kExitBadInput || c.status == kExitNeedLost ||
          failures >= retry.max_attempts) {
        final_state = TaskState::kFailed;
      } else {
        final_state = TaskState::kPending;
        if (retry.backoff_s > 0) not_before = now + retry.backoff_s * std::pow(2.0, failures - 1);
      }
    }
    again.bind(1, str(final_state))
        .bind(2, failures)
        .bind(3, c.status)
        .bind(4, reason)
        .bind(5, finished)
        .bind(6, not_before)
        .bind(7, c.index)
        .bind(8, c.attempt);
    if (again.run() != 1) continue;
    if (interrupted) {
      // An uncounted 75 (the lease held elsewhere) is recorded as such, so that neither the
      // count of the task's own stops (max_interruptions) nor that of lost attempts takes it.
      insertEvent(
          c.index, c.attempt, TaskState::kRunning, TaskState::kInterrupted, at, c.host, c.slot,
          c.status == kExitInterrupted && !c.counts_as_failure ? kEventLeaseRefused : c.status,
          c.reason);
      insertEvent(c.index, c.attempt, TaskState::kInterrupted, TaskState::kPending, at, c.host,
                  c.slot, -1, "requeued");
    } else if (final_state == TaskState::kFailed) {
      insertEvent(c.index, c.attempt, TaskState::kRunning, TaskState::kFailed, at, c.host, c.slot,
                  c.status, reason);
    } else {
      insertEvent(c.index, c.attempt, TaskState::kRunning, TaskState::kPending, at, c.host, c.slot,
                  c.status, "retry after: " + c.reason);
    }
    if (out) out->push_back({c.index, final_state, not_before});
    ++applied;
  }
  txn.commit();
  return applied;
}

namespace {

// For each of `indices`: `bind(idx)` binds `up`, an UPDATE … RETURNING attempts; where a row
// changed, `record(idx, attempt)` writes its events. Returns how many rows changed.
template <class Bind, class Record>
int updateEach(SqliteStatement& up, const std::vector<int>& indices, Bind&& bind, Record&& record) {
  int moved = 0;
  for (int idx : indices) {
    bind(idx);
    if (up.step()) {
      const int attempt = static_cast<int>(up.columnInt(0));
      up.reset();
      record(idx, attempt);
      ++moved;
    } else {
      up.reset();
    }
  }
  return moved;
}

}  // namespace

int CampaignJournal::requeue(const std::vector<int>& indices, const std::string& reason,
                             int event_exit_code, double not_before) {
  if (indices.empty()) return 0;
  SqliteTransaction txn(db_);
  // The events follow each row's own state: a running row is interrupted, then requeued; an
  // interrupted one (already counted as a lost attempt when it was interrupted) is requeued
  // only (before: both took running -> interrupted, counted again against
  // --max-submissions).
  const auto move = [&](const char* from) {
    const std::string sql = std::string(
                                "UPDATE tasks SET state='pending', reason=?, finished_at=?, "
                                "not_before=MAX(not_before, ?) WHERE idx=? AND state='") +
                            from + "' RETURNING attempts";
    SqliteStatement up(db_, sql.c_str());
    const double now = wallClockNow();
    const bool running = std::string(from) == str(TaskState::kRunning);
    return updateEach(
        up, indices,
        [&](int idx) { up.bind(1, reason).bind(2, now).bind(3, not_before).bind(4, idx); },
        [&](int idx, int attempt) {
          if (running)
            insertEvent(idx, attempt, TaskState::kRunning, TaskState::kInterrupted, now, "", -1,
                        event_exit_code, reason);
          insertEvent(idx, attempt, TaskState::kInterrupted, TaskState::kPending, now, "", -1, -1,
                      "requeued");
        });
  };
  const int moved = move("running") + move("interrupted");
  txn.commit();
  return moved;
}

int CampaignJournal::giveUp(const std::vector<int>& indices, const std::string& reason) {
  if (indices.empty()) return 0;
  SqliteTransaction txn(db_);
  SqliteStatement up(db_,
                     "UPDATE tasks SET state='failed', reason=?, exit_code=?, finished_at=? "
                     "WHERE idx=? AND state='running' RETURNING attempts");
  const double now = wallClockNow();
  const int moved = updateEach(
      up, indices,
      [&](int idx) { up.bind(1, reason).bind(2, kExitFailure).bind(3, now).bind(4, idx); },
      [&](int idx, int attempt) {
        insertEvent(idx, attempt, TaskState::kRunning, TaskState::kFailed, now, "", -1,
                    kExitFailure, reason);
      });
  txn.commit();
  return moved;
}

int CampaignJournal::retry(TaskState from, const std::string& reason) {
  if (from != TaskState::kFailed && from != TaskState::kCancelled)
    throw Error("journal: retry moves failed or cancelled tasks, not " + str(from));
  SqliteTransaction txn(db_);
  std::vector<std::pair<int, int>> rows;
  {
    SqliteStatement sel(db_, "SELECT idx, attempts FROM tasks WHERE state=? ORDER BY idx");
    sel.bind(1, str(from));
    while (sel.step())
      rows.emplace_back(static_cast<int>(sel.columnInt(0)), static_cast<int>(sel.columnInt(1)));
  }
  SqliteStatement up(
      db_, "UPDATE tasks SET state='pending', failures=0, not_before=0 WHERE idx=? AND state=?");
  double now = wallClockNow();
  for (auto [idx, attempt] : rows) {
    up.bind(1, idx).bind(2, str(from)).run();
    insertEvent(idx, attempt, from, TaskState::kPending, now, "", -1, -1, reason);
  }
  txn.commit();
  return static_cast<int>(rows.size());
}

int CampaignJournal::rerun(const std::vector<int>& indices, const std::string& reason,
                           const std::map<std::string, std::string>& meta) {
  SqliteTransaction txn(db_);
  SqliteStatement sel(db_, "SELECT state, attempts FROM tasks WHERE idx=?");
  SqliteStatement up(db_,
                     "UPDATE tasks SET state='pending', failures=0, not_before=0, ingested=0, "
                     "result=NULL, reason=? WHERE idx=?");
  const double now = wallClockNow();
  int moved = 0;
  for (int idx : indices) {
    sel.bind(1, idx);
    if (!sel.step()) throw Error("journal: no task of index " + std::to_string(idx));
    const TaskState from = *parseTaskState(sel.columnText(0));
    const int attempt = static_cast<int>(sel.columnInt(1));
    sel.reset();
    if (from != TaskState::kDone && from != TaskState::kFailed) continue;
    up.bind(1, reason).bind(2, idx).run();
    insertEvent(idx, attempt, from, TaskState::kPending, now, "", -1, -1, reason);
    ++moved;
  }
  for (const auto& [key, value] : meta) setMeta(key, value);
  txn.commit();
  return moved;
}

void CampaignJournal::extend(const std::vector<int>& new_index_of,
                             const std::vector<TaskDef>& added, const std::string& reason,
                             const std::map<std::string, std::string>& meta) {
  const int before = numTasks();
  if (static_cast<int>(new_index_of.size()) != before)
    throw Error("journal: an extension maps " + std::to_string(new_index_of.size()) +
                " tasks where the journal holds " + std::to_string(before));
  const size_t total = new_index_of.size() + added.size();
  std::vector<char> taken(total, 0);
  const auto take = [&](int idx, const std::string& what) {
    if (idx < 0 || static_cast<size_t>(idx) >= total || taken[static_cast<size_t>(idx)])
      throw Error("journal: an extension gives " + what + " index " + std::to_string(idx) +
                  ", outside 0.." + std::to_string(total - 1) + " or taken twice");
    taken[static_cast<size_t>(idx)] = 1;
  };
  for (size_t i = 0; i < new_index_of.size(); ++i)
    take(new_index_of[i], "task " + std::to_string(i));
  for (const TaskDef& t : added) take(t.index, "new task " + t.id);

  SqliteTransaction txn(db_);
  // Rows, events and edges are renumbered in turn; the references among them are checked at
  // the commit, when all agree again.
  db_.exec("PRAGMA defer_foreign_keys=ON");
  // A task's index changing looks up the edges that name it on both sides, by the index
  // needs_need (which open() gives journals made before it): without it each lookup would
  // read every edge (minutes for 10^5 tasks).
  bool identity = true;
  for (size_t i = 0; i < new_index_of.size(); ++i)
    identity = identity && new_index_of[i] == static_cast<int>(i);
  if (!identity) {
    db_.exec("CREATE TEMP TABLE IF NOT EXISTS renumber(old INTEGER PRIMARY KEY, new INTEGER)");
    db_.exec("DELETE FROM temp.renumber");
    SqliteStatement map(db_, "INSERT INTO temp.renumber(old, new) VALUES(?,?)");
    for (size_t i = 0; i < new_index_of.size(); ++i)
      if (new_index_of[i] != static_cast<int>(i))
        map.bind(1, static_cast<int>(i)).bind(2, new_index_of[i]).run();
    // Through negative numbers, which no index uses, so that no step of an UPDATE meets an
    // index still held by a row not yet moved.
    db_.exec(
        "UPDATE tasks SET idx = -1 - idx WHERE idx IN (SELECT old FROM temp.renumber);"
        "UPDATE tasks SET idx = (SELECT new FROM temp.renumber WHERE old = -1 - tasks.idx) "
        "WHERE idx < 0;"
        "UPDATE events SET task_idx = (SELECT new FROM temp.renumber WHERE old = task_idx) "
        "WHERE task_idx IN (SELECT old FROM temp.renumber);"
        "UPDATE needs SET task_idx = -1 - task_idx WHERE task_idx IN (SELECT old FROM "
        "temp.renumber);"
        "UPDATE needs SET needs_idx = -1 - needs_idx WHERE needs_idx IN (SELECT old FROM "
        "temp.renumber);"
        "UPDATE needs SET task_idx = (SELECT new FROM temp.renumber WHERE old = -1 - task_idx) "
        "WHERE task_idx < 0;"
        "UPDATE needs SET needs_idx = (SELECT new FROM temp.renumber WHERE old = -1 - "
        "needs_idx) WHERE needs_idx < 0;"
        "DELETE FROM temp.renumber;");
  }
  insertPendingTasks(added, reason);
  for (const auto& [key, value] : meta) setMeta(key, value);
  txn.commit();
}

int CampaignJournal::cancelUnfinished(const std::string& reason) {
  SqliteTransaction txn(db_);
  std::vector<std::tuple<int, int, std::string>> rows;
  {
    SqliteStatement sel(db_,
                        "SELECT idx, attempts, state FROM tasks WHERE state IN "
                        "('pending','running','interrupted') ORDER BY idx");
    while (sel.step()) {
      rows.emplace_back(static_cast<int>(sel.columnInt(0)), static_cast<int>(sel.columnInt(1)),
                        sel.columnText(2));
    }
  }
  SqliteStatement up(db_, "UPDATE tasks SET state='cancelled', reason=? WHERE idx=?");
  double now = wallClockNow();
  for (const auto& [idx, attempt, st] : rows) {
    up.bind(1, reason).bind(2, idx).run();
    insertEvent(idx, attempt, *parseTaskState(st), TaskState::kCancelled, now, "", -1, -1, reason);
  }
  txn.commit();
  return static_cast<int>(rows.size());
}

}  // namespace foldfarm::jobs
