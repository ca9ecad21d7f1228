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

// What the library knows of a public struct. name: for messages; init: how a caller sets
// struct_size; oldest: the smallest struct_size this library reads, the size of the first layout
// with struct_size. A field appended later leaves `oldest` where it was (offsetof(T, the new
// field) from then on) and gets its default when a caller's struct_size ends before it.
struct Layout {
  const char* name;
  const char* init;
  size_t oldest;
};

// layout_of(static_cast<const T*>(nullptr)): one overload a struct; another type does not compile.
#define SAMFAST_LAYOUT(type, init, oldest) \
  constexpr Layout layout_of(const type*) { return {#type, init, oldest}; }
SAMFAST_LAYOUT(samfast_info, "SAMFAST_INFO_INIT()", sizeof(samfast_info))
SAMFAST_LAYOUT(samfast_options, "SAMFAST_OPTIONS_INIT()", sizeof(samfast_options))
SAMFAST_LAYOUT(samfast_prompt, "SAMFAST_PROMPT_INIT()", sizeof(samfast_prompt))
SAMFAST_LAYOUT(samfast_output, "SAMFAST_OUTPUT_INIT()", sizeof(samfast_output))
SAMFAST_LAYOUT(samfast_volume_options, "samfast_volume_options_init(&options, sizeof options)",
               sizeof(samfast_volume_options))
#undef SAMFAST_LAYOUT

// The bytes of T both sides know: min(struct_size, sizeof(T)); a struct_size of 0 or below the
// oldest layout is refused.
template <class T>
size_t known_bytes(size_t struct_size) {
  constexpr Layout layout = layout_of(static_cast<const T*>(nullptr));
  if (struct_size == 0)
    fail(SAMFAST_ERR_INVALID_ARGUMENT,
         std::string(layout.name) + ".struct_size is 0: initialise the struct with " + layout.init);
  if (struct_size < layout.oldest)
    fail(SAMFAST_ERR_INVALID_ARGUMENT, std::string(layout.name) + ".struct_size is " + std::to_string(struct_size) +
                                           " bytes, smaller than the oldest layout this libsamfast " SAMFAST_VERSION
                                           " reads (" + std::to_string(layout.oldest) +
                                           " bytes): initialise it with " + layout.init);
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
