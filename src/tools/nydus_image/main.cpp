// nydus-image: build, check, inspect, unpack and export RAFS v6 images.
#include <cstdio>
#include <vector>

#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/log.h"

int main(int argc, char** argv) {
  using namespace nydus::tools;
  CLI::App app{"nydus-image: build and inspect RAFS v6 (Nydus) images"};
  app.set_version_flag("-V,--version", "nydus-image 0.1.0 (nydus-cpp, RAFS v6)");
  // Upstream's global options, accepted before or after the subcommand name
  // (subcommands created below inherit fallthrough and pass them up).
  app.fallthrough();
  std::string log_level = "info", log_file;
  app.add_option("-l,--log-level", log_level, "log level: trace, debug, info, warn, error")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(kLogLevelNames), std::end(kLogLevelNames))))
      ->capture_default_str();
  app.add_option("-L,--log-file", log_file, "write log lines to this file instead of stderr");
  std::vector<Command> commands = {
      add_create_command(app), add_check_command(app),  add_inspect_command(app),
      add_stat_command(app),   add_unpack_command(app), add_export_command(app),
      add_merge_command(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; a usage error exits 2, as upstream's clap does.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (auto err = setup_log(log_level, log_file); !err.empty()) {
    std::fprintf(stderr, "nydus-image: %s\n", err.c_str());
    return 1;
  }
  for (auto& c : commands)
    if (c.app->parsed()) return c.run();
  // No subcommand: upstream prints its usage and succeeds.
  std::printf("%s", app.help().c_str());
  return 0;
}
