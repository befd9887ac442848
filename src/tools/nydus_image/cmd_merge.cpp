// nydus-image merge: stack per-layer bootstraps into one image bootstrap.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "builder/merge.h"
#include "builder/prefetch_list.h"
#include "format/compress.h"
#include "tools/nydus_image/cli_util.h"
#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/log.h"

namespace nydus::tools {

namespace {

struct MergeArgs {
  std::vector<std::string> layers;
  // Upstream takes each list as one comma-separated value.
  std::string blob_digests, original_blob_ids, blob_sizes, blob_toc_digests, blob_toc_sizes;
  std::string bootstrap, blob_dir, parent_bootstrap, chunk_dict, output_json, config;
  std::string whiteout_spec = "oci", prefetch_policy = "none";
};

// "a, b,c" -> {"a","b","c"} (items trimmed, as upstream); "" -> {}.
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t i = 0;
  while (true) {
    size_t j = s.find(',', i);
    std::string item = s.substr(i, j == std::string::npos ? std::string::npos : j - i);
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    out.push_back(b == std::string::npos ? "" : item.substr(b, e - b + 1));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

bool parse_sizes(const std::string& list, std::vector<uint64_t>& out, std::string& bad) {
  for (auto& s : split_list(list)) {
    try {
      size_t pos = 0;
      unsigned long long v = std::stoull(s, &pos, 10);
      if (pos != s.size() || s.empty() || s[0] == '-') throw std::invalid_argument(s);
      out.push_back(v);
    } catch (...) {
      bad = s;
      return false;
    }
  }
  return true;
}

int run_merge(const MergeArgs& a) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "nydus-image merge: %s\n", msg.c_str());
    return kExitFailure;
  };
  builder::MergeOptions o;
  for (auto& l : a.layers) o.layers.emplace_back(l);
  o.bootstrap = a.bootstrap;
  o.bootstrap_dir = a.blob_dir;
  o.parent_bootstrap = a.parent_bootstrap;
  if (!a.chunk_dict.empty()) {
    // Upstream's syntax is "bootstrap=<path>"; a bare path is taken as one.
    std::string d = a.chunk_dict;
    if (d.starts_with("bootstrap=")) d.erase(0, 10);
    else if (d.find('=') != std::string::npos) return fail("invalid chunk dict path " + a.chunk_dict);
    o.chunk_dict = d;
  }
  for (auto d : split_list(a.blob_digests)) {
    if (d.starts_with("sha256:")) d.erase(0, 7);
    o.blob_digests.push_back(d);
  }
  for (auto d : split_list(a.blob_toc_digests)) {
    if (d.starts_with("sha256:")) d.erase(0, 7);
    o.blob_toc_digests.push_back(d);
  }
  o.original_blob_ids = split_list(a.original_blob_ids);
  std::string bad;
  if (!parse_sizes(a.blob_sizes, o.blob_sizes, bad)) return fail("invalid number in --blob-sizes option: '" + bad + "'");
  if (!parse_sizes(a.blob_toc_sizes, o.blob_toc_sizes, bad))
    return fail("invalid number in --blob-toc-sizes option: '" + bad + "'");
  if (a.whiteout_spec == "oci") o.whiteout = builder::WhiteoutSpec::kOci;
  else if (a.whiteout_spec == "overlayfs") o.whiteout = builder::WhiteoutSpec::kOverlayfs;
  else o.whiteout = builder::WhiteoutSpec::kNone;
  // As upstream: fs and blob read the list from stdin; only fs writes a
  // prefetch table (merge lays out no data).
  if (a.prefetch_policy != "none") {
    auto pp = builder::parse_prefetch_patterns(std::cin);
    for (auto& w : pp.warnings) log_warn("{}", w);
    if (a.prefetch_policy == "fs") o.prefetch_patterns = std::move(pp.paths);
  }

  auto r = builder::merge_layers(o);
  if (!r) {
    std::fprintf(stderr, "nydus-image merge: %s\n", r.error().message.c_str());
    return r.error().message.find(builder::kInconsistentFilesystem) != std::string::npos ? 2 : kExitFailure;
  }
  std::vector<std::string> ids;
  for (auto& b : r->blobs) ids.push_back(b.blob_id);
  nlohmann::json j = upstream_output_json(r->bootstrap.string(), ids, format::compressor_name(r->compressor));
  j["fs_version"] = std::to_string(r->fs_version);
  j["stats"] = {{"inodes", r->inodes}, {"bootstrap_size", r->bootstrap_size}};
  if (!a.output_json.empty()) {
    std::ofstream f(a.output_json);
    f << j.dump(2) << "\n";
    if (!f) return fail("can not open output file " + a.output_json);
  }
  log_info("merged {} layers into {}: {} inodes, {} blobs", o.layers.size(), r->bootstrap.string(), r->inodes,
           r->blobs.size());
  return 0;
}

}  // namespace

Command add_merge_command(CLI::App& parent) {
  auto args = std::make_shared<MergeArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("merge", "Merge per-layer bootstraps (lowest first) into one bootstrap");
  cmd.app = app;
  app->add_option("SOURCE", args->layers, "layer bootstraps, lowest first")->required();
  app->add_option("-B,--bootstrap", args->bootstrap, "merged bootstrap to write");
  app->add_option("-D,--blob-dir", args->blob_dir, "without -B: write the merged bootstrap here, named by its sha256");
  app->add_option("--parent-bootstrap", args->parent_bootstrap, "bootstrap below all layers");
  app->add_option("--blob-digests", args->blob_digests, "comma-separated: the blob id of each layer's own blob");
  app->add_option("--original-blob-ids", args->original_blob_ids,
                  "comma-separated: each layer's blob id when its bootstrap names it with the inlined placeholder");
  app->add_option("--blob-sizes", args->blob_sizes, "comma-separated: blob size of each layer");
  app->add_option("--blob-toc-digests", args->blob_toc_digests, "comma-separated: ToC digest of each layer's blob");
  app->add_option("--blob-toc-sizes", args->blob_toc_sizes, "comma-separated: ToC size of each layer's blob");
  app->add_option("--chunk-dict", args->chunk_dict, "bootstrap=<path>: the chunk dictionary the layers were built with");
  app->add_option("--prefetch-policy", args->prefetch_policy, "fs, blob or none (list of paths on stdin)")
      ->check(CLI::IsMember({"fs", "blob", "none"}));
  app->add_option("-C,--config", args->config, "accepted for compatibility; not used");
  app->add_option("-W,--whiteout-spec", args->whiteout_spec, "oci, overlayfs, none")
      ->check(CLI::IsMember({"oci", "overlayfs", "none"}));
  app->add_option("-J,--output-json", args->output_json, "write a JSON report here");
  cmd.run = [args] { return run_merge(*args); };
  return cmd;
}

}  // namespace nydus::tools
