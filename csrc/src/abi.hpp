// The struct_size rule of samfast.h (STRUCT SIZES): what the library reads of a caller's struct and
// writes back into it, whatever header the caller was compiled against.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>

#include "error.hpp"
#include "samfast.h"

namespace samfast {

template <class T>
struct Layout;

// name: for messages; init: how a caller sets struct_size; oldest: the smallest struct_size this
// library reads, the size of the first layout with struct_size. A field appended later leaves
// `oldest` alone (say offsetof(T, the_new_field) from then on) and gets its default when a
// caller's struct_size ends before it.
template <>
struct Layout<samfast_info> {
  static constexpr const char* name = "samfast_info";
  static constexpr const char* init = "SAMFAST_INFO_INIT()";
  static constexpr size_t oldest = sizeof(samfast_info);
};
template <>
struct Layout<samfast_options> {
  static constexpr const char* name = "samfast_options";
  static constexpr const char* init = "SAMFAST_OPTIONS_INIT()";
  static constexpr size_t oldest = sizeof(samfast_options);
};
template <>
struct Layout<samfast_prompt> {
  static constexpr const char* name = "samfast_prompt";
  static constexpr const char* init = "SAMFAST_PROMPT_INIT()";
  static constexpr size_t oldest = sizeof(samfast_prompt);
};
template <>
struct Layout<samfast_output> {
  static constexpr const char* name = "samfast_output";
  static constexpr const char* init = "SAMFAST_OUTPUT_INIT()";
  static constexpr size_t oldest = sizeof(samfast_output);
};
template <>
struct Layout<samfast_volume_options> {
  static constexpr const char* name = "samfast_volume_options";
  static constexpr const char* init = "samfast_volume_options_init(&options, sizeof options)";
  static constexpr size_t oldest = sizeof(samfast_volume_options);
};

// The bytes of T both sides know: min(struct_size, sizeof(T)); a struct_size of 0 or below the
// oldest layout is refused.
template <class T>
size_t known_bytes(size_t struct_size) {
  using L = Layout<T>;
  if (struct_size == 0)
    fail(SAMFAST_ERR_INVALID_ARGUMENT,
         std::string(L::name) + ".struct_size is 0: initialise the struct with " + L::init);
  if (struct_size < L::oldest)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, std::string(L::name) + ".struct_size is " + std::to_string(struct_size) +
                                           " bytes, smaller than the oldest layout this libsamfast " SAMFAST_VERSION
                                           " reads (" + std::to_string(L::oldest) +
                                           " bytes): initialise it with " + L::init);
  return std::min(struct_size, sizeof(T));
}

// The caller's struct as this library's T: its known fields, and `defaults`' for the rest.
template <class T>
T read_struct(const T& theirs, T defaults) {
  static_assert(std::is_trivially_copyable_v<T> && offsetof(T, struct_size) == 0);
  std::memcpy(&defaults, &theirs, known_bytes<T>(theirs.struct_size));
  defaults.struct_size = sizeof(T);
  return defaults;
}

// Write ours into the caller's struct of struct_size bytes: the known fields, and struct_size.
template <class T>
void write_struct(T& theirs, size_t struct_size, T ours) {
  const size_t bytes = known_bytes<T>(struct_size);
  ours.struct_size = struct_size;
  std::memcpy(&theirs, &ours, bytes);
}

}  // namespace samfast
