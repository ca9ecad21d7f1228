// SHA-256 of a file (to check exported files against their manifest entries) and of byte ranges
// (the slice cache's keys).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <utility>

namespace samfast {

// Lower-case hex digest of the file at `path`; throws std::runtime_error when it cannot be read.
std::string sha256_file(const std::string& path);

// Lower-case hex digest of the concatenated (pointer, byte count) ranges.
std::string sha256_parts(std::initializer_list<std::pair<const void*, size_t>> parts);

}  // namespace samfast
