// What this binary was built from, as upstream's BuildTimeInfo reports it
// (`nydusd --version`, GET /api/v1/daemon "version"). Filled in at build time
// by cmake/build_info.cmake.
#pragma once

namespace nydus {

struct BuildInfo {
  const char* package_ver;  // `git describe` when it names a tag, else the project version
  const char* git_commit;   // full commit id ("unknown" outside a git checkout)
  const char* build_time;   // the commit's time (ISO 8601): a tree always builds the same
  const char* profile;      // the CMake build type
  const char* compiler;     // in upstream's "rustc" field
};

const BuildInfo& build_info();

}  // namespace nydus
