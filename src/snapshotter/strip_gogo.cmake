# Copies one of containerd's .proto files without its gogoproto import and
# options (Go code-generation hints that protoc's C++ output does not need).
#   cmake -DIN=<src.proto> -DOUT=<dst.proto> -P strip_gogo.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "import weak \"gogoproto/gogo.proto\";" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[a-z_]+\\)[^;]*;" "" text "${text}")
string(REGEX REPLACE " *\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
file(WRITE "${OUT}" "${text}")
