#include <cstdio>

#include "tools/nydus_image/commands.h"

namespace nydus::tools {

Command add_stat_command(CLI::App& parent) {
  Command cmd;
  cmd.app = parent.add_subcommand("stat", "not implemented yet");
  cmd.run = [] {
    std::fprintf(stderr, "nydus-image stat: not implemented yet\n");
    return 1;
  };
  return cmd;
}

}  // namespace nydus::tools
