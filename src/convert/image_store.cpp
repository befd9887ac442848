#include "convert/image_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>

#include "common/file_util.h"
#include "storage/docker_config.h"
#include "convert/mapped_file.h"
#include "format/digest.h"
#include "storage/http_client.h"
#include "storage/registry_backend.h"

namespace nydus::convert {

namespace fs = std::filesystem;
using nlohmann::json;
using storage::HttpClient;
using storage::HttpRequest;
using storage::RegistryCredential;
using storage::HttpResponse;

namespace {

constexpr size_t kMaxManifest = 4 << 20;
constexpr size_t kMaxConfig = 8 << 20;

std::string digest_of(std::span<const uint8_t> data) {
  return "sha256:" + format::to_hex(format::sha256(data));
}

Status check_digest(std::span<const uint8_t> data, const std::string& want, std::string_view what) {
  const std::string got = digest_of(data);
  if (got != want) return errorf(Errc::kCorrupt, "{}: content is {}, not {}", what, got, want);
  return ok();
}

// ---- registry ----------------------------------------------------------------

storage::HttpOptions http_options(const StoreOptions& o) {
  storage::HttpOptions h;
  h.timeout = std::chrono::seconds(60);
  h.connect_timeout = std::chrono::seconds(10);
  h.skip_verify = o.skip_verify;
  return h;
}

class RegistryStore : public ImageStore {
 public:
  RegistryStore(const ImageRef& ref, const StoreOptions& o)
      : ref_(ref),
        opts_(o),
        base_(std::string(o.plain_http ? "http://" : "https://") + ref.api_host()),
        http_(http_options(o)) {}

  std::string describe() const override { return ref_.to_string(); }

  Result<FetchedManifest> get_manifest(const std::string& reference) override {
    HttpRequest r;
    r.url = api("manifests/" + reference);
    r.headers.emplace_back("Accept", fmt::format("{}, {}, {}, {}", media::kOciIndex, media::kOciManifest,
                                                 media::kDockerList, media::kDockerManifest));
    r.max_body = kMaxManifest;
    NYDUS_ASSIGN_OR_RETURN(HttpResponse resp, send(r, false));
    if (resp.status != 200)
      return errorf(resp.status == 404 ? Errc::kNotFound : Errc::kIo, "GET manifest {} of {}: HTTP {}", reference,
                    describe(), resp.status);
    FetchedManifest f;
    f.bytes = std::move(resp.body);
    f.digest = sha256_digest(f.bytes);
    if (valid_digest(reference) && f.digest != reference)
      return errorf(Errc::kCorrupt, "manifest {} has content {}", reference, f.digest);
    f.media_type = resp.header("content-type");
    if (auto semi = f.media_type.find(';'); semi != std::string::npos) f.media_type.resize(semi);
    if (!is_index_type(f.media_type) && !is_manifest_type(f.media_type)) f.media_type = sniff_media_type(f.bytes);
    return f;
  }

  Result<std::string> get_blob(const Descriptor& d) override {
    if (d.size > kMaxConfig) return errorf(Errc::kCorrupt, "blob {} of {} bytes is too big to hold", d.digest, d.size);
    std::string out(d.size, '\0');
    NYDUS_TRY(download(d, {reinterpret_cast<uint8_t*>(out.data()), out.size()}));
    return out;
  }

  Result<fs::path> blob_file(const Descriptor& d, const fs::path& scratch) override {
    const fs::path p = scratch / (d.digest.substr(7) + ".blob");
    {
      NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::create(p, d.size));
      NYDUS_TRY(download(d, m.bytes()));
    }
    return p;
  }

  Status push_blob(const std::string& digest, const fs::path& file) override {
    NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::open_read(file));
    return upload(digest, m.bytes());
  }

  Status push_blob_bytes(const std::string& digest, std::string_view bytes) override {
    return upload(digest, {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  }

  Status push_manifest(const std::string& reference, std::string_view media_type, std::string_view bytes) override {
    HttpRequest r;
    r.method = "PUT";
    r.url = api("manifests/" + reference);
    r.headers.emplace_back("Content-Type", std::string(media_type));
    r.body = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
    NYDUS_ASSIGN_OR_RETURN(HttpResponse resp, send(r, true));
    if (resp.status != 201 && resp.status != 200)
      return errorf(Errc::kIo, "PUT manifest {} to {}: HTTP {}: {}", reference, describe(), resp.status, resp.body);
    return ok();
  }

  PushStats push_stats() const override {
    return PushStats{pushed_.load(), present_.load(), bytes_.load()};
  }

 private:
  std::string api(const std::string& tail) {
    std::lock_guard lk(mu_);
    return base_ + "/v2/" + ref_.repository + "/" + tail;
  }

  // One request with the registry's auth: on a 401 answer its challenge
  // (a Bearer token from the realm for this repository, or Basic) and retry.
  // `r.url` is rewritten when the registry turns out to speak plain HTTP.
  Result<HttpResponse> send(HttpRequest& r, bool push) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      HttpRequest req = r;
      if (auto h = auth_header(); !h.empty()) req.headers.emplace_back("Authorization", h);
      auto resp = http_.perform(req);
      if (!resp) {
        if (!fall_back_to_http(r.url, resp.error())) return std::unexpected(std::move(resp).error());
        attempt--;  // the same request again over http (once: the url is http now)
        continue;
      }
      if (resp->status != 401) return std::move(*resp);
      NYDUS_TRY(answer_challenge(resp->header("www-authenticate"), push));
    }
    return errorf(Errc::kIo, "{} {}: still unauthorized after authenticating", r.method, r.url);
  }

  // Upstream's converter retries over plain HTTP when https gets an HTTP
  // answer or a refused connection (not on a certificate error: that
  // needs --*-insecure). Switches the store to http and rewrites `url`.
  bool fall_back_to_http(std::string& url, const Error& e) {
    const std::string https = "https://" + ref_.api_host() + "/";
    if (!opts_.http_fallback || !url.starts_with(https)) return false;
    std::string m = e.message;
    if (auto p = m.find(url + ": "); p != std::string::npos) m.erase(0, p + url.size() + 2);
    for (auto& c : m) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (m.find("wrong version number") == std::string::npos && m.find("packet length too long") == std::string::npos &&
        m.find("connection refused") == std::string::npos && m.find("couldn't connect") == std::string::npos)
      return false;
    url = "http://" + url.substr(std::string_view("https://").size());
    std::lock_guard lk(mu_);
    base_ = "http://" + ref_.api_host();
    return true;
  }

  // The credential to answer a challenge with: --*-auth, else Docker's
  // config (looked up once).
  Result<RegistryCredential> credential() {
    std::lock_guard lk(cred_mu_);
    if (cred_) return *cred_;
    RegistryCredential c;
    if (!opts_.auth.empty()) {
      c.username = "(--auth)";  // only marks it non-empty: the header is opts_.auth itself
    } else if (opts_.use_docker_config) {
      auto found = storage::docker_credentials(ref_.host, opts_.docker_config_dir.empty() ? storage::docker_config_dir()
                                                                                 : opts_.docker_config_dir);
      if (!found) return std::unexpected(std::move(found).error());
      if (*found) c = **found;
    }
    cred_ = c;
    return c;
  }

  // "Basic ..." for the credential, or "" when there is none to send.
  std::string basic_header(const RegistryCredential& c) const {
    if (!opts_.auth.empty()) return "Basic " + opts_.auth;
    if (c.username.empty() && c.password.empty()) return "";
    return "Basic " + storage::base64_encode(c.username + ":" + c.password);
  }

  std::string auth_header() {
    std::lock_guard lk(mu_);
    return auth_;
  }

  Status answer_challenge(const std::string& header, bool push) {
    for (const auto& ch : storage::parse_www_authenticate(header)) {
      if (ch.scheme == "basic") {
        NYDUS_ASSIGN_OR_RETURN(RegistryCredential c, credential());
        const std::string h = basic_header(c);
        if (h.empty())
          return errorf(Errc::kInvalidArgument,
                        "{} wants credentials: docker login {} (or --source-auth/--target-auth)", describe(), ref_.host);
        std::lock_guard lk(mu_);
        auth_ = h;
        return ok();
      }
      if (ch.scheme == "bearer") {
        auto realm = ch.params.find("realm");
        if (realm == ch.params.end()) continue;
        std::string url = realm->second;
        std::string q;
        if (auto s = ch.params.find("service"); s != ch.params.end()) q += "service=" + storage::url_encode(s->second);
        q += std::string(q.empty() ? "" : "&") + "scope=" +
             storage::url_encode("repository:" + ref_.repository + (push ? ":pull,push" : ":pull"));
        url += (url.find('?') == std::string::npos ? "?" : "&") + q;
        NYDUS_ASSIGN_OR_RETURN(RegistryCredential c, credential());
        HttpRequest t;
        std::string form;
        if (opts_.auth.empty() && !c.identity_token.empty()) {
          // An identity token is an OAuth2 refresh token: POST it (as
          // containerd's authorizer does; the GET form has no place for it).
          t.method = "POST";
          t.url = realm->second;
          form = "grant_type=refresh_token&client_id=nydusify&refresh_token=" + storage::url_encode(c.identity_token) +
                 "&" + q;
          t.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
          t.body = {reinterpret_cast<const uint8_t*>(form.data()), form.size()};
        } else {
          t.url = url;
          if (auto h = basic_header(c); !h.empty()) t.headers.emplace_back("Authorization", h);
        }
        NYDUS_ASSIGN_OR_RETURN(HttpResponse resp, http_.perform(t));
        if (resp.status != 200) return errorf(Errc::kIo, "token from {}: HTTP {}", realm->second, resp.status);
        json j = json::parse(resp.body, nullptr, false);
        std::string token;
        if (j.is_object())
          for (const char* k : {"token", "access_token"})
            if (auto it = j.find(k); it != j.end() && it->is_string()) token = it->get<std::string>();
        if (token.empty()) return errorf(Errc::kCorrupt, "token reply from {} holds no token", realm->second);
        std::lock_guard lk(mu_);
        auth_ = "Bearer " + token;
        return ok();
      }
    }
    return errorf(Errc::kIo, "{}: unauthorized, and no usable challenge in \"{}\"", describe(), header);
  }

  // GET a blob into `out` (exactly its size), following one redirect to
  // storage without our Authorization, then check its digest.
  Status download(const Descriptor& d, std::span<uint8_t> out) {
    HttpRequest r;
    r.url = api("blobs/" + d.digest);
    r.body_out = out;
    r.timeout = opts_.blob_timeout;
    NYDUS_ASSIGN_OR_RETURN(HttpResponse resp, send(r, false));
    if (resp.status == 307 || resp.status == 302 || resp.status == 301 || resp.status == 303) {
      NYDUS_ASSIGN_OR_RETURN(std::string loc, storage::resolve_url(r.url, resp.header("location")));
      HttpRequest s;
      s.url = loc;
      s.body_out = out;
      s.timeout = opts_.blob_timeout;
      NYDUS_ASSIGN_OR_RETURN(resp, http_.perform(s));
    }
    if (resp.status != 200) return errorf(Errc::kIo, "GET blob {} of {}: HTTP {}", d.digest, describe(), resp.status);
    if (resp.body_bytes != out.size())
      return errorf(Errc::kCorrupt, "blob {}: {} bytes received, {} expected", d.digest, resp.body_bytes, out.size());
    return check_digest(out, d.digest, "blob " + d.digest);
  }

  Status upload(const std::string& digest, std::span<const uint8_t> data) {
    NYDUS_TRY(check_digest(data, digest, "upload"));
    HttpRequest head;
    head.method = "HEAD";
    head.url = api("blobs/" + digest);
    NYDUS_ASSIGN_OR_RETURN(HttpResponse h, send(head, true));
    if (h.status == 200) {
      present_++;
      return ok();
    }
    HttpRequest post;
    post.method = "POST";
    post.url = api("blobs/uploads/");
    NYDUS_ASSIGN_OR_RETURN(HttpResponse p, send(post, true));
    if (p.status != 202) return errorf(Errc::kIo, "start upload to {}: HTTP {}: {}", describe(), p.status, p.body);
    NYDUS_ASSIGN_OR_RETURN(std::string loc, storage::resolve_url(post.url, p.header("location")));
    HttpRequest put;
    put.method = "PUT";
    put.url = loc + (loc.find('?') == std::string::npos ? "?" : "&") + "digest=" + storage::url_encode(digest);
    put.headers.emplace_back("Content-Type", "application/octet-stream");
    put.body = data;
    put.timeout = opts_.blob_timeout;
    NYDUS_ASSIGN_OR_RETURN(HttpResponse done, send(put, true));
    if (done.status != 201) return errorf(Errc::kIo, "upload {} to {}: HTTP {}: {}", digest, describe(), done.status, done.body);
    pushed_++;
    bytes_ += data.size();
    return ok();
  }

  ImageRef ref_;
  StoreOptions opts_;
  std::string base_;
  HttpClient http_;
  std::mutex mu_;  // auth_, base_
  std::string auth_;
  std::mutex cred_mu_;
  std::optional<RegistryCredential> cred_;
  std::atomic<uint64_t> pushed_{0}, present_{0}, bytes_{0};
};

// ---- OCI image layout ----------------------------------------------------------

class LayoutStore : public ImageStore {
 public:
  explicit LayoutStore(const ImageRef& ref) : ref_(ref), dir_(ref.layout_dir) {}

  std::string describe() const override { return ref_.to_string(); }

  Result<FetchedManifest> get_manifest(const std::string& reference) override {
    Descriptor d;
    if (valid_digest(reference)) {
      d.digest = reference;
      d.size = kMaxManifest;
    } else {
      NYDUS_ASSIGN_OR_RETURN(json index, read_index());
      NYDUS_ASSIGN_OR_RETURN(std::vector<Descriptor> entries, parse_index(index.dump()));
      const Descriptor* pick = nullptr;
      for (const auto& e : entries) {
        auto name = e.annotations.find(std::string(annotation::kRefName));
        if ((name != e.annotations.end() && name->second == reference) || (reference.empty() && entries.size() == 1))
          pick = &e;
      }
      if (!pick) return errorf(Errc::kNotFound, "{}: no manifest tagged \"{}\" in index.json", dir_.string(), reference);
      d = *pick;
    }
    NYDUS_ASSIGN_OR_RETURN(std::string bytes, read_blob(d.digest, kMaxManifest));
    FetchedManifest f;
    f.digest = d.digest;
    f.media_type = !d.media_type.empty() ? d.media_type : sniff_media_type(bytes);
    f.bytes = std::move(bytes);
    return f;
  }

  Result<std::string> get_blob(const Descriptor& d) override { return read_blob(d.digest, kMaxConfig); }

  Result<fs::path> blob_file(const Descriptor& d, const fs::path&) override {
    const fs::path p = path_of(d.digest);
    NYDUS_ASSIGN_OR_RETURN(std::string got, file_digest(p));
    if (got != d.digest) return errorf(Errc::kCorrupt, "{}: content is {}, not {}", p.string(), got, d.digest);
    return p;
  }

  Status push_blob(const std::string& digest, const fs::path& file) override {
    NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::open_read(file));
    return store(digest, m.bytes());
  }

  Status push_blob_bytes(const std::string& digest, std::string_view bytes) override {
    return store(digest, {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  }

  Status push_manifest(const std::string& reference, std::string_view media_type, std::string_view bytes) override {
    const std::string digest = sha256_digest(bytes);
    NYDUS_TRY(push_blob_bytes(digest, bytes));
    if (valid_digest(reference)) return ok();
    std::lock_guard lk(mu_);
    json index = json{{"schemaVersion", 2}, {"mediaType", media::kOciIndex}, {"manifests", json::array()}};
    if (auto existing = read_index()) index = *existing;
    json kept = json::array();
    auto tagged = [&](const json& m) {  // untrusted: any shape
      if (!m.is_object()) return false;
      auto a = m.find("annotations");
      if (a == m.end() || !a->is_object()) return false;
      auto n = a->find(std::string(annotation::kRefName));
      return n != a->end() && n->is_string() && n->get<std::string>() == reference;
    };
    if (index.contains("manifests") && index["manifests"].is_array())
      for (const auto& m : index["manifests"])
        if (!tagged(m)) kept.push_back(m);
    Descriptor d;
    d.media_type = std::string(media_type);
    d.digest = digest;
    d.size = bytes.size();
    d.annotations[std::string(annotation::kRefName)] = reference;
    kept.push_back(to_json(d));
    index["manifests"] = kept;
    std::error_code ec;
    fs::create_directories(dir_, ec);
    const std::string layout = R"({"imageLayoutVersion":"1.0.0"})";
    NYDUS_TRY(write_file_atomic(dir_ / "oci-layout", {reinterpret_cast<const uint8_t*>(layout.data()), layout.size()}));
    const std::string text = index.dump(2);
    return write_file_atomic(dir_ / "index.json", {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  }

  PushStats push_stats() const override { return PushStats{pushed_.load(), present_.load(), bytes_.load()}; }

 private:
  fs::path path_of(const std::string& digest) const { return dir_ / "blobs" / "sha256" / digest.substr(7); }

  // Content-addressed: a blob already there is the same blob.
  Status store(const std::string& digest, std::span<const uint8_t> data) {
    NYDUS_TRY(check_digest(data, digest, "blob for " + dir_.string()));
    const fs::path p = path_of(digest);
    std::error_code ec;
    if (fs::exists(p, ec)) {
      present_++;
      return ok();
    }
    fs::create_directories(p.parent_path(), ec);
    NYDUS_TRY(write_file_atomic(p, data));
    pushed_++;
    bytes_ += data.size();
    return ok();
  }

  Result<json> read_index() const {
    std::ifstream in(dir_ / "index.json");
    if (!in) return errorf(Errc::kNotFound, "{}: no index.json", dir_.string());
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (!j.is_object()) return errorf(Errc::kCorrupt, "{}/index.json is not a JSON object", dir_.string());
    return j;
  }

  Result<std::string> read_blob(const std::string& digest, size_t max) const {
    if (!valid_digest(digest)) return errorf(Errc::kCorrupt, "bad digest {}", digest);
    const fs::path p = path_of(digest);
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) return sys_error(fmt::format("{}", p.string()), ec.value());
    if (size > max) return errorf(Errc::kCorrupt, "{} is {} bytes, more than {}", p.string(), size, max);
    std::ifstream in(p, std::ios::binary);
    std::string s(size, '\0');
    if (!in.read(s.data(), std::streamsize(size))) return sys_error(fmt::format("read {}", p.string()));
    NYDUS_TRY(check_digest({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, digest, p.string()));
    return s;
  }

  ImageRef ref_;
  fs::path dir_;
  std::mutex mu_;
  std::atomic<uint64_t> pushed_{0}, present_{0}, bytes_{0};
};

}  // namespace

Result<FetchedManifest> resolve_manifest(ImageStore& s, const std::string& reference, const Platform& want, bool nydus,
                                         Platform* found) {
  NYDUS_ASSIGN_OR_RETURN(FetchedManifest top, s.get_manifest(reference));
  if (found) *found = want;
  if (!is_index_type(top.media_type)) return top;
  NYDUS_ASSIGN_OR_RETURN(std::vector<Descriptor> entries, parse_index(top.bytes));
  // A merged index marks its Nydus manifests (os feature or artifact type);
  // an index of Nydus manifests only (no --merge-platform) marks nothing.
  auto marked = [](const Descriptor& e) {
    const auto& f = e.platform->os_features;
    return std::find(f.begin(), f.end(), kNydusOsFeature) != f.end() || e.artifact_type == media::kNydusArtifact;
  };
  for (int pass = 0; pass < (nydus ? 2 : 1); ++pass)
    for (const auto& e : entries) {
      if (!is_manifest_type(e.media_type) || !e.platform || !platform_matches(want, *e.platform)) continue;
      if (pass == 0 && marked(e) != nydus) continue;
      if (found) *found = *e.platform;
      return s.get_manifest(e.digest);
    }
  return errorf(Errc::kNotFound, "{} has no {}manifest for {}/{}", s.describe(), nydus ? "Nydus " : "", want.os,
                want.architecture);
}

Result<std::string> file_digest(const fs::path& p) {
  NYDUS_ASSIGN_OR_RETURN(MappedFile m, MappedFile::open_read(p));
  return digest_of(m.bytes());
}

Result<std::unique_ptr<ImageStore>> open_store(const ImageRef& ref, const StoreOptions& opts) {
  if (ref.kind == ImageRef::Kind::kOciLayout) return std::unique_ptr<ImageStore>(new LayoutStore(ref));
  return std::unique_ptr<ImageStore>(new RegistryStore(ref, opts));
}

}  // namespace nydus::convert
