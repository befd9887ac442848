# containerd's snapshots v1 API, compiled at build time from the .proto files
# Debian ships in golang-github-containerd-containerd-dev (gogoproto stripped).
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
pkg_check_modules(PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(YAMLCPP REQUIRED IMPORTED_TARGET yaml-cpp)  # kubelet credential provider config
find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
set(CONTAINERD_GOCODE /usr/share/gocode/src CACHE PATH "Go sources holding github.com/containerd/containerd/api")

set(proto_root ${PROJECT_BINARY_DIR}/generated/proto)
set(proto_out ${PROJECT_BINARY_DIR}/generated/containerd)
set(containerd_protos
  github.com/containerd/containerd/api/types/mount.proto
  github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto)
set(stripped)
set(generated)
foreach(p ${containerd_protos})
  add_custom_command(OUTPUT ${proto_root}/${p}
    COMMAND ${CMAKE_COMMAND} -DIN=${CONTAINERD_GOCODE}/${p} -DOUT=${proto_root}/${p}
            -P ${CMAKE_CURRENT_LIST_DIR}/strip_gogo.cmake
    DEPENDS ${CONTAINERD_GOCODE}/${p} ${CMAKE_CURRENT_LIST_DIR}/strip_gogo.cmake)
  list(APPEND stripped ${proto_root}/${p})
  string(REGEX REPLACE "\\.proto$" "" base ${p})
  list(APPEND generated ${proto_out}/${base}.pb.cc ${proto_out}/${base}.pb.h)
endforeach()
list(APPEND generated
  ${proto_out}/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.cc
  ${proto_out}/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h)
add_custom_command(OUTPUT ${generated}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${proto_out}
  COMMAND ${PROTOC} -I ${proto_root} -I /usr/include --cpp_out=${proto_out} --grpc_out=${proto_out}
          --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} ${containerd_protos}
  WORKING_DIRECTORY ${proto_root}
  DEPENDS ${stripped}
  COMMENT "protoc: containerd snapshots v1")
# The CRI image service the CRI keychain proxies (our reduced copy of its .proto).
set(cri_proto ${CMAKE_CURRENT_LIST_DIR}/cri_image_service.proto)
set(cri_generated ${proto_out}/cri/cri_image_service.pb.cc ${proto_out}/cri/cri_image_service.pb.h
                  ${proto_out}/cri/cri_image_service.grpc.pb.cc ${proto_out}/cri/cri_image_service.grpc.pb.h)
add_custom_command(OUTPUT ${cri_generated}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${proto_out}/cri
  COMMAND ${PROTOC} -I ${CMAKE_CURRENT_LIST_DIR} --cpp_out=${proto_out}/cri --grpc_out=${proto_out}/cri
          --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN} ${cri_proto}
  DEPENDS ${cri_proto}
  COMMENT "protoc: CRI v1 image service")
list(APPEND generated ${cri_generated})
list(FILTER generated INCLUDE REGEX "\\.cc$")
add_library(containerd_snapshots_proto STATIC ${generated})
target_include_directories(containerd_snapshots_proto PUBLIC ${proto_out})
target_link_libraries(containerd_snapshots_proto PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)
# Generated code is not ours to lint.
target_compile_options(containerd_snapshots_proto PRIVATE -w)
