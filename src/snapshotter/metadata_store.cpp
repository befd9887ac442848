#include "snapshotter/metadata_store.h"

#include <sqlite3.h>

#include <chrono>

#include <nlohmann/json.hpp>

namespace nydus::snapshotter {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& bind(int i, const std::string& s) {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(st_); }
  std::string text(int col) {
    auto* p = sqlite3_column_text(st_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(st_, col)) : "";
  }
  int64_t i64(int col) { return sqlite3_column_int64(st_, col); }
  std::unexpected<SnapError> error(std::string_view what) const {
    return snap_error(Code::kInternal, "metadata {}: {}", what, sqlite3_errmsg(db_));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int rc_;
};

std::string labels_to_json(const Labels& l) { return nlohmann::json(l).dump(); }

Labels labels_from_json(const std::string& s) {
  Labels out;
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_object()) return out;
  for (auto& [k, v] : j.items())
    if (v.is_string()) out[k] = v.get<std::string>();
  return out;
}

constexpr const char* kColumns = "id, key, kind, parent, labels, created_ns, updated_ns, size, inodes";

MetadataStore::Record read_record(Stmt& st) {
  MetadataStore::Record r;
  r.id = std::to_string(st.i64(0));
  r.info.name = st.text(1);
  r.info.kind = static_cast<Kind>(st.i64(2));
  r.info.parent = st.text(3);
  r.info.labels = labels_from_json(st.text(4));
  r.info.created_ns = st.i64(5);
  r.info.updated_ns = st.i64(6);
  r.usage.size = st.i64(7);
  r.usage.inodes = st.i64(8);
  return r;
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kView: return "View";
    case Kind::kActive: return "Active";
    case Kind::kCommitted: return "Committed";
    default: return "Unknown";
  }
}

const char* code_name(Code c) {
  switch (c) {
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNotFound: return "not found";
    case Code::kAlreadyExists: return "already exists";
    case Code::kFailedPrecondition: return "failed precondition";
    case Code::kUnavailable: return "unavailable";
    case Code::kInternal: return "internal";
    default: return "unknown";
  }
}

SResult<std::unique_ptr<MetadataStore>> MetadataStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return snap_error(Code::kInternal, "open metadata {}: {}", path, msg);
  }
  std::unique_ptr<MetadataStore> s(new MetadataStore(db));
  sqlite3_busy_timeout(db, 10000);
  SNAP_TRY(s->exec("PRAGMA journal_mode=WAL"));
  SNAP_TRY(s->exec("PRAGMA synchronous=FULL"));
  SNAP_TRY(s->exec(
      "CREATE TABLE IF NOT EXISTS snapshots ("
      " id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " key TEXT NOT NULL UNIQUE,"
      " kind INTEGER NOT NULL,"
      " parent TEXT NOT NULL DEFAULT '',"
      " labels TEXT NOT NULL DEFAULT '{}',"
      " created_ns INTEGER NOT NULL,"
      " updated_ns INTEGER NOT NULL,"
      " size INTEGER NOT NULL DEFAULT 0,"
      " inodes INTEGER NOT NULL DEFAULT 0)"));
  SNAP_TRY(s->exec("CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent)"));
  return s;
}

MetadataStore::~MetadataStore() { sqlite3_close(db_); }

SResult<void> MetadataStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    return snap_error(Code::kInternal, "metadata: {}: {}", sql, msg);
  }
  return {};
}

SResult<MetadataStore::Transaction> MetadataStore::begin() {
  SNAP_TRY(exec("BEGIN IMMEDIATE"));
  return Transaction(this);
}

MetadataStore::Transaction::~Transaction() {
  if (s_) (void)s_->exec("ROLLBACK");
}

SResult<void> MetadataStore::Transaction::commit() {
  auto* s = s_;
  s_ = nullptr;
  return s->exec("COMMIT");
}

SResult<std::vector<std::string>> MetadataStore::parent_chain(std::string parent) {
  std::vector<std::string> ids;
  // Parents are committed snapshots, so the chain cannot loop; bound it anyway.
  while (!parent.empty()) {
    if (ids.size() > 4096) return snap_error(Code::kInternal, "parent chain too long");
    Stmt q(db_, "SELECT id, parent FROM snapshots WHERE key = ?1");
    q.bind(1, parent);
    int rc = q.step();
    if (rc != SQLITE_ROW) {
      if (rc == SQLITE_DONE) return snap_error(Code::kNotFound, "missing parent {:?}", parent);
      return q.error("parent chain");
    }
    ids.push_back(std::to_string(q.i64(0)));
    parent = q.text(1);
  }
  return ids;
}

SResult<Snapshot> MetadataStore::create_snapshot(Kind kind, const std::string& key,
                                                 const std::string& parent, const Labels& labels) {
  if (kind != Kind::kActive && kind != Kind::kView)
    return snap_error(Code::kInvalidArgument,
                      "snapshot type {} invalid; only snapshots of type Active or View can be created",
                      kind_name(kind));
  if (key.empty()) return snap_error(Code::kInvalidArgument, "snapshot key must not be empty");
  if (!parent.empty()) {
    auto p = get_info(parent);
    if (!p) {
      if (p.error().code == Code::kNotFound)
        return snap_error(Code::kNotFound, "missing parent {:?} bucket", parent);
      return std::unexpected(p.error());
    }
    if (p->info.kind != Kind::kCommitted)
      return snap_error(Code::kInvalidArgument, "parent {:?} is not committed snapshot", parent);
  }
  int64_t now = now_ns();
  Stmt st(db_,
          "INSERT INTO snapshots (key, kind, parent, labels, created_ns, updated_ns) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?5)");
  st.bind(1, key).bind(2, static_cast<int64_t>(kind)).bind(3, parent).bind(4, labels_to_json(labels)).bind(5, now);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT) return snap_error(Code::kAlreadyExists, "snapshot {}: already exists", key);
  if (rc != SQLITE_DONE) return st.error("insert");
  Snapshot s;
  s.id = std::to_string(sqlite3_last_insert_rowid(db_));
  s.kind = kind;
  auto chain = parent_chain(parent);
  if (!chain) return std::unexpected(chain.error());
  s.parent_ids = std::move(*chain);
  return s;
}

SResult<MetadataStore::Record> MetadataStore::get_info(const std::string& key) {
  std::string sql = std::string("SELECT ") + kColumns + " FROM snapshots WHERE key = ?1";
  Stmt st(db_, sql.c_str());
  st.bind(1, key);
  int rc = st.step();
  if (rc == SQLITE_DONE) return snap_error(Code::kNotFound, "snapshot {}: does not exist", key);
  if (rc != SQLITE_ROW) return st.error("get");
  return read_record(st);
}

SResult<Snapshot> MetadataStore::get_snapshot(const std::string& key) {
  auto r = get_info(key);
  if (!r) return std::unexpected(r.error());
  if (r->info.kind != Kind::kActive && r->info.kind != Kind::kView)
    return snap_error(Code::kFailedPrecondition, "requested snapshot {} not active or view", key);
  Snapshot s;
  s.id = r->id;
  s.kind = r->info.kind;
  auto chain = parent_chain(r->info.parent);
  if (!chain) return std::unexpected(chain.error());
  s.parent_ids = std::move(*chain);
  return s;
}

SResult<Info> MetadataStore::update_info(const Info& info, const std::vector<std::string>& fieldpaths) {
  auto r = get_info(info.name);
  if (!r) return std::unexpected(r.error());
  Info updated = r->info;
  if (!fieldpaths.empty()) {
    for (const auto& path : fieldpaths) {
      if (path.starts_with("labels.")) {
        std::string k = path.substr(7);
        auto it = info.labels.find(k);
        // containerd sets the key to the given value, "" when absent, which
        // Go's label writer then drops: an absent key deletes the label.
        if (it == info.labels.end() || it->second.empty())
          updated.labels.erase(k);
        else
          updated.labels[k] = it->second;
        continue;
      }
      if (path == "labels") {
        updated.labels = info.labels;
        continue;
      }
      return snap_error(Code::kInvalidArgument, "cannot update {:?} field on snapshot {:?}", path, info.name);
    }
  } else {
    updated.labels = info.labels;
  }
  updated.updated_ns = now_ns();
  Stmt st(db_, "UPDATE snapshots SET labels = ?1, updated_ns = ?2 WHERE key = ?3");
  st.bind(1, labels_to_json(updated.labels)).bind(2, updated.updated_ns).bind(3, info.name);
  if (st.step() != SQLITE_DONE) return st.error("update");
  return updated;
}

SResult<std::string> MetadataStore::commit_active(const std::string& key, const std::string& name,
                                                  const Usage& usage, const Labels& labels) {
  if (name.empty()) return snap_error(Code::kInvalidArgument, "snapshot name must not be empty");
  if (auto existing = get_info(name); existing)
    return snap_error(Code::kAlreadyExists, "committed snapshot {}: already exists", name);
  auto r = get_info(key);
  if (!r) {
    if (r.error().code == Code::kNotFound)
      return snap_error(Code::kNotFound, "failed to get active snapshot {:?}", key);
    return std::unexpected(r.error());
  }
  if (r->info.kind != Kind::kActive)
    return snap_error(Code::kFailedPrecondition, "snapshot {:?} is not active", key);
  int64_t now = now_ns();
  Stmt st(db_,
          "UPDATE snapshots SET key = ?1, kind = ?2, labels = ?3, created_ns = ?4, updated_ns = ?4,"
          " size = ?5, inodes = ?6 WHERE key = ?7");
  st.bind(1, name).bind(2, static_cast<int64_t>(Kind::kCommitted)).bind(3, labels_to_json(labels))
      .bind(4, now).bind(5, usage.size).bind(6, usage.inodes).bind(7, key);
  if (st.step() != SQLITE_DONE) return st.error("commit");
  return r->id;
}

SResult<std::pair<std::string, Kind>> MetadataStore::remove(const std::string& key) {
  auto r = get_info(key);
  if (!r) return std::unexpected(r.error());
  {
    Stmt c(db_, "SELECT 1 FROM snapshots WHERE parent = ?1 LIMIT 1");
    c.bind(1, key);
    int rc = c.step();
    if (rc == SQLITE_ROW) return snap_error(Code::kFailedPrecondition, "cannot remove snapshot with child");
    if (rc != SQLITE_DONE) return c.error("children");
  }
  Stmt st(db_, "DELETE FROM snapshots WHERE key = ?1");
  st.bind(1, key);
  if (st.step() != SQLITE_DONE) return st.error("delete");
  return std::pair{r->id, r->info.kind};
}

SResult<void> MetadataStore::walk(const std::function<SResult<void>(const Record&)>& fn) {
  // Read all rows first: fn may run statements of its own.
  std::vector<Record> rows;
  {
    std::string sql = std::string("SELECT ") + kColumns + " FROM snapshots ORDER BY key";
    Stmt st(db_, sql.c_str());
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) rows.push_back(read_record(st));
    if (rc != SQLITE_DONE) return st.error("walk");
  }
  for (const auto& r : rows) SNAP_TRY(fn(r));
  return {};
}

SResult<std::set<std::string>> MetadataStore::ids() {
  std::set<std::string> out;
  Stmt st(db_, "SELECT id FROM snapshots");
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.insert(std::to_string(st.i64(0)));
  if (rc != SQLITE_DONE) return st.error("ids");
  return out;
}

}  // namespace nydus::snapshotter
