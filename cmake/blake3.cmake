# BLAKE3's official C implementation, as shipped by Debian's librust-blake3-dev.
file(GLOB BLAKE3_DIRS LIST_DIRECTORIES true /usr/share/cargo/registry/blake3-*/c)
list(SORT BLAKE3_DIRS)
list(GET BLAKE3_DIRS -1 BLAKE3_DIR)
if(NOT EXISTS "${BLAKE3_DIR}/blake3.h")
  message(FATAL_ERROR "BLAKE3 C sources not found: apt-get install librust-blake3-dev")
endif()
add_library(blake3 STATIC
  ${BLAKE3_DIR}/blake3.c
  ${BLAKE3_DIR}/blake3_dispatch.c
  ${BLAKE3_DIR}/blake3_portable.c
  ${BLAKE3_DIR}/blake3_sse2_x86-64_unix.S
  ${BLAKE3_DIR}/blake3_sse41_x86-64_unix.S
  ${BLAKE3_DIR}/blake3_avx2_x86-64_unix.S
  ${BLAKE3_DIR}/blake3_avx512_x86-64_unix.S)
target_include_directories(blake3 SYSTEM PUBLIC ${BLAKE3_DIR})
set_target_properties(blake3 PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_compile_options(blake3 PRIVATE -w)
