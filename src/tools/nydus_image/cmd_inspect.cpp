#include <cstdio>

#include "tools/nydus_image/commands.h"

namespace nydus::tools {

Command add_inspect_command(CLI::App& parent) {
  Command cmd;
  cmd.app = parent.add_subcommand("inspect", "not implemented yet");
  cmd.run = [] {
    std::fprintf(stderr, "nydus-image inspect: not implemented yet\n");
    return 1;
  };
  return cmd;
}

}  // namespace nydus::tools
