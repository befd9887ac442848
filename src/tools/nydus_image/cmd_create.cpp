#include <cstdio>

#include "tools/nydus_image/commands.h"

namespace nydus::tools {

Command add_create_command(CLI::App& parent) {
  Command cmd;
  cmd.app = parent.add_subcommand("create", "not implemented yet");
  cmd.run = [] {
    std::fprintf(stderr, "nydus-image create: not implemented yet\n");
    return 1;
  };
  return cmd;
}

}  // namespace nydus::tools
