// nydus-image merge: stack per-layer bootstraps into one image bootstrap.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "builder/merge.h"
#include "tools/nydus_image/commands.h"

namespace nydus::tools {

namespace {

struct MergeArgs {
  std::vector<std::string> layers, blob_digests, blob_sizes;
  std::string bootstrap, parent_bootstrap, chunk_dict, output_json, whiteout_spec = "oci";
};

int run_merge(const MergeArgs& a) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "nydus-image merge: %s\n", msg.c_str());
    return 1;
  };
  if (!a.chunk_dict.empty()) return fail("--chunk-dict is not supported by merge");
  builder::MergeOptions o;
  for (auto& l : a.layers) o.layers.emplace_back(l);
  o.bootstrap = a.bootstrap;
  o.parent_bootstrap = a.parent_bootstrap;
  for (auto d : a.blob_digests) {
    if (d.starts_with("sha256:")) d.erase(0, 7);
    o.blob_digests.push_back(d);
  }
  for (auto& s : a.blob_sizes) {
    try {
      size_t pos = 0;
      unsigned long long v = std::stoull(s, &pos, 0);
      if (pos != s.size()) throw std::invalid_argument(s);
      o.blob_sizes.push_back(v);
    } catch (...) {
      return fail("bad blob size '" + s + "'");
    }
  }
  if (a.whiteout_spec == "oci") o.whiteout = builder::WhiteoutSpec::kOci;
  else if (a.whiteout_spec == "overlayfs") o.whiteout = builder::WhiteoutSpec::kOverlayfs;
  else if (a.whiteout_spec == "none") o.whiteout = builder::WhiteoutSpec::kNone;
  else return fail("--whiteout-spec " + a.whiteout_spec + " is not one of oci, overlayfs, none");

  auto r = builder::merge_layers(o);
  if (!r) return fail(r.error().message);
  nlohmann::json j;
  j["version"] = "nydus-cpp 0.1.0";
  j["bootstrap"] = a.bootstrap;
  j["blobs"] = nlohmann::json::array();
  for (auto& b : r->blobs) j["blobs"].push_back(b.blob_id);
  j["stats"] = {{"inodes", r->inodes}, {"bootstrap_size", r->bootstrap_size}};
  if (!a.output_json.empty()) {
    std::ofstream f(a.output_json);
    f << j.dump(2) << "\n";
    if (!f) return fail("cannot write " + a.output_json);
  }
  std::fprintf(stderr, "merged %zu layers into %s: %llu inodes, %zu blobs\n", o.layers.size(), a.bootstrap.c_str(),
               (unsigned long long)r->inodes, r->blobs.size());
  return 0;
}

}  // namespace

Command add_merge_command(CLI::App& parent) {
  auto args = std::make_shared<MergeArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("merge", "Merge per-layer bootstraps (lowest first) into one bootstrap");
  cmd.app = app;
  app->add_option("LAYERS", args->layers, "layer bootstraps, lowest first")->required();
  app->add_option("-B,--bootstrap", args->bootstrap, "merged bootstrap to write")->required();
  app->add_option("--parent-bootstrap", args->parent_bootstrap, "bootstrap below all layers");
  app->add_option("--blob-digests", args->blob_digests, "real blob id of each layer (for inlined-bootstrap layers)")
      ->delimiter(',');
  app->add_option("--blob-sizes", args->blob_sizes, "blob size of each layer")->delimiter(',');
  app->add_option("--chunk-dict", args->chunk_dict, "chunk dictionary bootstrap (not supported)");
  app->add_option("-W,--whiteout-spec", args->whiteout_spec, "oci, overlayfs, none");
  app->add_option("-J,--output-json", args->output_json, "write a JSON report here");
  cmd.run = [args] { return run_merge(*args); };
  return cmd;
}

}  // namespace nydus::tools
