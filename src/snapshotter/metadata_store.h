// Snapshot metadata in one SQLite file (WAL, synchronous=FULL: a committed
// transaction survives kill -9 and power loss), with containerd's storage
// semantics (snapshots/storage/bolt.go): an ID per snapshot that survives
// Commit (the directory snapshots/<id> is reused), parents by committed name,
// and the same error codes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "snapshotter/errors.h"

struct sqlite3;

namespace nydus::snapshotter {

// Values as containerd.services.snapshots.v1.Kind.
enum class Kind { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };
const char* kind_name(Kind k);

using Labels = std::map<std::string, std::string>;

struct Info {
  std::string name;
  std::string parent;
  Kind kind = Kind::kUnknown;
  Labels labels;
  int64_t created_ns = 0;  // since the Unix epoch, UTC
  int64_t updated_ns = 0;
};

struct Usage {
  int64_t size = 0;
  int64_t inodes = 0;
};

// An active or view snapshot with its parent chain (nearest parent first).
struct Snapshot {
  std::string id;
  Kind kind = Kind::kUnknown;
  std::vector<std::string> parent_ids;
};

class MetadataStore {
 public:
  static SResult<std::unique_ptr<MetadataStore>> open(const std::string& path);
  ~MetadataStore();
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // One write transaction at a time (BEGIN IMMEDIATE); rolled back unless committed.
  class Transaction {
   public:
    explicit Transaction(MetadataStore* s) : s_(s) {}
    Transaction(Transaction&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    ~Transaction();
    SResult<void> commit();

   private:
    MetadataStore* s_;
  };
  SResult<Transaction> begin();

  SResult<Snapshot> create_snapshot(Kind kind, const std::string& key, const std::string& parent,
                                    const Labels& labels);
  SResult<Snapshot> get_snapshot(const std::string& key);
  struct Record {
    std::string id;
    Info info;
    Usage usage;
  };
  SResult<Record> get_info(const std::string& key);
  SResult<Info> update_info(const Info& info, const std::vector<std::string>& fieldpaths);
  // Renames active `key` to committed `name` keeping its ID; labels replace the old ones.
  SResult<std::string> commit_active(const std::string& key, const std::string& name,
                                     const Usage& usage, const Labels& labels);
  // Returns the removed snapshot's ID and kind.
  SResult<std::pair<std::string, Kind>> remove(const std::string& key);
  SResult<void> walk(const std::function<SResult<void>(const Record&)>& fn);
  SResult<std::set<std::string>> ids();

 private:
  explicit MetadataStore(sqlite3* db) : db_(db) {}
  SResult<void> exec(const char* sql);
  SResult<std::vector<std::string>> parent_chain(std::string parent);
  sqlite3* db_;
};

}  // namespace nydus::snapshotter
