// SHA-256 of a file (FIPS 180-4), to check exported files against their manifest entries.
#pragma once

#include <string>

namespace samfast {

// Lower-case hex digest of the file at `path`; throws std::runtime_error when it cannot be read.
std::string sha256_file(const std::string& path);

// Lower-case hex digest of a byte string (used by the self-test vectors).
std::string sha256_bytes(const std::string& data);

}  // namespace samfast
