#include "fscache/blob_registry.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "fscache/message.h"
#include "runtime/image_storage.h"

namespace nydus::fscache {

using nlohmann::json;

std::shared_ptr<DataBlobSource> BlobRegistry::shared_source_locked(const format::BlobInfo& info,
                                                                   const std::shared_ptr<storage::Backend>& backend,
                                                                   const storage::CacheConfig& cc,
                                                                   std::vector<format::Digest> digests) {
  auto& slot = sources_[{cc.work_dir.string(), info.blob_id}];
  if (auto s = slot.lock()) return s;
  auto s = std::make_shared<DataBlobSource>(info, backend, cc, std::move(digests));
  slot = s;
  return s;
}

Status BlobRegistry::add(const BlobEntry& entry, std::shared_ptr<storage::Backend> backend) {
  const std::string key = blob_key(entry.domain_id, entry.id);
  {
    std::lock_guard lk(mu_);
    if (metas_.count(key) || datas_.count(key)) return errorf(Errc::kExists, "blob object {} already exists", key);
  }
  // Open and validate outside the lock: this reads the bootstrap file.
  auto boot = format::Bootstrap::open(entry.metadata_path);
  if (!boot) return std::unexpected(std::move(boot).error().context(entry.metadata_path.string()));
  const auto& blobs = (*boot)->blobs();
  if (!blobs.empty() && !backend) {
    NYDUS_ASSIGN_OR_RETURN(backend, storage::make_backend(entry.config.backend));
    backend->preconnect();  // the first on-demand read need not wait for a handshake
  }
  storage::CacheConfig cc = runtime::cache_config(entry.config, default_work_dir_);
  cc.work_dir = std::filesystem::absolute(cc.work_dir).lexically_normal();
  std::vector<std::vector<format::Digest>> digests(blobs.size());
  if (entry.config.digest_validate) {
    NYDUS_ASSIGN_OR_RETURN(digests, runtime::chunk_digests(**boot));
  }

  std::lock_guard lk(mu_);
  if (metas_.count(key) || datas_.count(key)) return errorf(Errc::kExists, "blob object {} already exists", key);
  // Data blobs live in the kernel volume of the mount: the domain's, or
  // without one the image's own (named after its fsid).
  const std::string vol = volume_of(entry);
  // Check every blob before taking any reference: all or nothing.
  for (const auto& b : blobs) {
    const std::string dkey = blob_key(vol, b.blob_id);
    if (metas_.count(dkey)) return errorf(Errc::kExists, "blob {} is registered as a bootstrap in this domain", dkey);
    auto it = datas_.find(dkey);
    if (it != datas_.end() && it->second.source->size() != b.uncompressed_size)
      return errorf(Errc::kCorrupt, "blob {}: uncompressed size {} differs from the {} registered before", b.blob_id,
                    b.uncompressed_size, it->second.source->size());
  }
  Meta m;
  m.entry = entry;
  m.boot = *boot;
  m.source = std::make_shared<BootstrapSource>(entry.id, *boot);
  for (uint32_t i = 0; i < blobs.size(); ++i) {
    const std::string dkey = blob_key(vol, blobs[i].blob_id);
    auto [it, fresh] = datas_.try_emplace(dkey);
    if (fresh) {
      it->second.volume_id = vol;
      it->second.domain_id = entry.domain_id;
      it->second.source = shared_source_locked(blobs[i], backend, cc, std::move(digests[i]));
      it->second.boot = *boot;
      it->second.blob_index = i;
      it->second.prefetch = entry.config.prefetch;
      it->second.amplify = entry.config.amplify_io;
    }
    it->second.refs++;
    m.blob_keys.push_back(dkey);
  }
  spdlog::info("fscache: registered bootstrap {} ({} blobs) from {}", key, blobs.size(), entry.metadata_path.string());
  metas_.emplace(key, std::move(m));
  return ok();
}

std::string BlobRegistry::volume_of(const BlobEntry& e) { return e.domain_id.empty() ? e.id : e.domain_id; }

bool BlobRegistry::unref_locked(const std::string& key) {
  auto it = datas_.find(key);
  if (it == datas_.end()) return false;
  if (--it->second.refs > 0) return false;
  datas_.erase(it);
  return true;
}

void BlobRegistry::remove_meta_locked(std::map<std::string, Meta>::iterator it, std::vector<CacheObjectName>& gone) {
  const BlobEntry& e = it->second.entry;
  const std::string vol = volume_of(e);
  gone.push_back({vol, e.id});
  for (size_t i = 0; i < it->second.blob_keys.size(); ++i)
    if (unref_locked(it->second.blob_keys[i])) gone.push_back({vol, it->second.boot->blobs()[i].blob_id});
  metas_.erase(it);
}

Result<std::vector<CacheObjectName>> BlobRegistry::remove(const std::string& domain_id, const std::string& blob_id) {
  std::lock_guard lk(mu_);
  std::vector<CacheObjectName> gone;
  if (blob_id.empty()) {
    size_t n = 0;
    for (auto it = metas_.begin(); it != metas_.end();) {
      auto next = std::next(it);
      if (it->second.entry.domain_id == domain_id) remove_meta_locked(it, gone), n++;
      it = next;
    }
    for (auto it = datas_.begin(); it != datas_.end();)  // references from bootstraps of other domains cannot exist
      if (it->second.domain_id == domain_id)
        gone.push_back({it->second.volume_id, it->second.source->name()}), it = datas_.erase(it), n++;
      else
        ++it;
    if (n == 0) return errorf(Errc::kNotFound, "no blob objects in domain {}", domain_id);
    return gone;
  }
  const std::string key = blob_key(domain_id, blob_id);
  if (auto it = metas_.find(key); it != metas_.end()) {
    remove_meta_locked(it, gone);
    return gone;
  }
  if (datas_.count(key)) {
    if (unref_locked(key)) gone.push_back({domain_id, blob_id});
    return gone;
  }
  return errorf(Errc::kNotFound, "blob object {} not found", key);
}

std::optional<ObjectLookup> BlobRegistry::find(std::string_view volume_key, std::string_view cookie_key) const {
  const std::string vol(volume_id(volume_key));
  const std::string cookie(cookie_key);
  std::lock_guard lk(mu_);
  auto lookup = [&](const std::string& key) -> std::optional<ObjectLookup> {
    if (auto it = metas_.find(key); it != metas_.end()) {
      ObjectLookup l;
      l.source = it->second.source;
      l.is_bootstrap = true;
      l.amplify = it->second.entry.config.amplify_io;
      return l;
    }
    if (auto it = datas_.find(key); it != datas_.end()) {
      ObjectLookup l;
      l.source = it->second.source;
      l.boot = it->second.boot;
      l.blob_index = it->second.blob_index;
      l.prefetch = it->second.prefetch;
      l.amplify = it->second.amplify;
      return l;
    }
    return std::nullopt;
  };
  if (auto l = lookup(blob_key(vol, cookie))) return l;
  // A mount without domain_id names its volume after its fsid, and its
  // bootstrap entry was registered without a domain, under its plain id.
  if (vol == cookie)
    if (auto it = metas_.find(cookie); it != metas_.end() && it->second.entry.domain_id.empty()) return lookup(cookie);
  return std::nullopt;
}

json BlobRegistry::list(const std::string& domain_id, const std::string& blob_id) const {
  std::lock_guard lk(mu_);
  json out = json::array();
  auto in_scope = [&](const std::string& dom, const std::string& id) {
    return dom == domain_id && (blob_id.empty() || id == blob_id);
  };
  for (const auto& [key, m] : metas_)
    if (in_scope(m.entry.domain_id, m.entry.id))
      out.push_back(json{{"type", "bootstrap"},
                         {"id", m.entry.id},
                         {"domain_id", m.entry.domain_id},
                         {"metadata_path", m.entry.metadata_path.string()},
                         {"blobs", m.boot->blobs().size()}});
  for (const auto& [key, d] : datas_)
    if (in_scope(d.domain_id, d.source->name()))
      out.push_back(json{{"type", "datablob"},
                         {"id", d.source->name()},
                         {"domain_id", d.domain_id},
                         {"uncompressed_size", d.source->size()},
                         {"refs", d.refs}});
  return out;
}

Result<int> BlobRegistry::update_auth(std::string_view fsid, const std::string& auth_base64) {
  std::vector<std::shared_ptr<storage::Backend>> backends;
  int matched = 0;
  {
    std::lock_guard lk(mu_);
    for (auto& [key, meta] : metas_) {
      if (meta.entry.id != fsid) continue;
      ++matched;
      // The entry as a restarted daemon re-registers it: upstream's legacy
      // shape (config.backend_config) or config_v2's backend.registry.
      json& raw = meta.entry.raw;
      auto obj = [](json& j, const char* k) -> json* {
        auto it = j.is_object() ? j.find(k) : j.end();
        return it != j.end() && it->is_object() ? &*it : nullptr;
      };
      if (json* c = obj(raw, "config"); c && obj(*c, "backend_config")) {
        (*c)["backend_config"]["auth"] = auth_base64;
      } else if (json* v2 = obj(raw, "config_v2")) {
        if (json* b = obj(*v2, "backend"); b && obj(*b, "registry")) (*b)["registry"]["auth"] = auth_base64;
      }
      for (const auto& bk : meta.blob_keys)
        if (auto it = datas_.find(bk); it != datas_.end() && it->second.source) {
          const auto& b = it->second.source->backend();
          if (b && std::ranges::find(backends, b) == backends.end()) backends.push_back(b);
        }
    }
  }
  // Outside the lock: each backend takes them under its own.
  for (const auto& b : backends) {
    auto st = b->update_auth(auth_base64);
    if (!st && st.error().code != Errc::kUnsupported) return std::unexpected(st.error());
  }
  return matched;
}

std::vector<json> BlobRegistry::entries() const {
  std::lock_guard lk(mu_);
  std::vector<json> out;
  for (const auto& [key, m] : metas_) out.push_back(m.entry.raw);
  return out;
}

std::vector<std::shared_ptr<DataBlobSource>> BlobRegistry::data_blobs() const {
  std::lock_guard lk(mu_);
  std::vector<std::shared_ptr<DataBlobSource>> out;
  for (const auto& [k, w] : sources_)
    if (auto s = w.lock()) out.push_back(std::move(s));
  return out;
}

bool BlobRegistry::contains_blob(const std::string& blob_id) const {
  std::lock_guard lk(mu_);
  for (const auto& [k, d] : datas_)
    if (d.source->name() == blob_id) return true;
  return false;
}

}  // namespace nydus::fscache
