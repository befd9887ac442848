// nydus-image: build, check, inspect, unpack and export RAFS v6 images.
#include <cstdio>
#include <vector>

#include "tools/nydus_image/commands.h"

int main(int argc, char** argv) {
  using namespace nydus::tools;
  CLI::App app{"nydus-image: build and inspect RAFS v6 (Nydus) images"};
  app.set_version_flag("-V,--version", "nydus-image 0.1.0 (nydus-cpp, RAFS v6)");
  app.require_subcommand(1);
  std::vector<Command> commands = {
      add_create_command(app), add_check_command(app),  add_inspect_command(app),
      add_stat_command(app),   add_unpack_command(app), add_export_command(app),
      add_merge_command(app),
  };
  CLI11_PARSE(app, argc, argv);
  for (auto& c : commands)
    if (c.app->parsed()) return c.run();
  return 1;
}
