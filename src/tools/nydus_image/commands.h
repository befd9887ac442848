// nydus-image subcommands. Each lives in its own cmd_<name>.cpp and registers
// itself on the CLI11 app; `run` is called when that subcommand was chosen and
// returns the process exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace nydus::tools {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_create_command(CLI::App& parent);
Command add_check_command(CLI::App& parent);
Command add_inspect_command(CLI::App& parent);
Command add_stat_command(CLI::App& parent);
Command add_unpack_command(CLI::App& parent);
Command add_export_command(CLI::App& parent);
Command add_merge_command(CLI::App& parent);

}  // namespace nydus::tools
