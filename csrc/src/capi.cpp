// The C ABI: every entry point catches everything, records a thread-local message and returns a
// status code. No exception leaves this file.
#include <cstring>
#include <memory>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <new>
#include <string>

#include "abi.hpp"
#include "error.hpp"
#include "model.hpp"
#include "samfast.h"
#include "volume.hpp"

struct samfast_model {
  std::unique_ptr<samfast::Model> impl;
};

namespace {

thread_local std::string last_error;

void set_error(const char* message) noexcept {
  try {
    last_error = message;
  } catch (...) {
    last_error.clear();  // out of memory while reporting: an empty message, the status still tells
  }
}

template <class F>
samfast_status guarded(F&& body) noexcept {
  last_error.clear();
  try {
    body();
    return SAMFAST_OK;
  } catch (const samfast::Error& e) {
    set_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
    return SAMFAST_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(e.what());
    return SAMFAST_ERR_RUNTIME;
  } catch (...) {
    set_error("unknown error");
    return SAMFAST_ERR_RUNTIME;
  }
}

void need(const void* pointer, const char* name) {
  if (!pointer) samfast::fail(SAMFAST_ERR_INVALID_ARGUMENT, std::string(name) + " is NULL");
}

}  // namespace

extern "C" {

SAMFAST_API const char* samfast_version(void) { return SAMFAST_VERSION; }

SAMFAST_API const char* samfast_status_name(samfast_status status) {
  switch (status) {
    case SAMFAST_OK: return "SAMFAST_OK";
    case SAMFAST_ERR_INVALID_ARGUMENT: return "SAMFAST_ERR_INVALID_ARGUMENT";
    case SAMFAST_ERR_NOT_FOUND: return "SAMFAST_ERR_NOT_FOUND";
    case SAMFAST_ERR_MANIFEST: return "SAMFAST_ERR_MANIFEST";
    case SAMFAST_ERR_OUT_OF_RANGE: return "SAMFAST_ERR_OUT_OF_RANGE";
    case SAMFAST_ERR_BUFFER_TOO_SMALL: return "SAMFAST_ERR_BUFFER_TOO_SMALL";
    case SAMFAST_ERR_NO_SLICE: return "SAMFAST_ERR_NO_SLICE";
    case SAMFAST_ERR_UNSUPPORTED: return "SAMFAST_ERR_UNSUPPORTED";
    case SAMFAST_ERR_RUNTIME: return "SAMFAST_ERR_RUNTIME";
    case SAMFAST_ERR_OUT_OF_MEMORY: return "SAMFAST_ERR_OUT_OF_MEMORY";
  }
  return "SAMFAST_ERR_UNKNOWN";
}

SAMFAST_API const char* samfast_last_error(void) { return last_error.c_str(); }

SAMFAST_API int samfast_has_tensorrt(void) {
#ifdef SAMFAST_WITH_TENSORRT
  return 1;
#else
  return 0;
#endif
}

SAMFAST_API int samfast_has_backend(const char* name) {
  if (!name) return 0;
  if (!std::strcmp(name, "openvino")) return 1;
#ifdef SAMFAST_WITH_LIBTORCH
  if (!std::strcmp(name, "libtorch")) return 1;
#endif
  if (!std::strcmp(name, "tensorrt")) return samfast_has_tensorrt();
  return 0;
}

SAMFAST_API samfast_status samfast_set_num_threads(int n) {
  return guarded([&] {
    if (n < 1) samfast::fail(SAMFAST_ERR_INVALID_ARGUMENT, "thread count must be >= 1, got " + std::to_string(n));
    samfast::set_default_threads(n);
  });
}

SAMFAST_API samfast_status samfast_open_with(const char* export_dir, const samfast_options* options,
                                             samfast_model** out_model) {
  if (out_model) *out_model = nullptr;
  return guarded([&] {
    need(out_model, "out_model");
    need(export_dir, "export_dir");
    samfast::OpenOptions open;
    if (options) {
      const samfast_options o = samfast::read_struct(*options, samfast_options{});
      open.backend = o.backend ? o.backend : "";
      open.device = o.device ? o.device : "";
      open.precision = o.precision ? o.precision : "";
      open.cache_slices = o.cache_slices;
      open.threads = o.threads;
    }
    auto model = std::make_unique<samfast_model>();
    model->impl = std::make_unique<samfast::Model>(export_dir, open);
    *out_model = model.release();
  });
}

SAMFAST_API samfast_status samfast_open(const char* export_dir, const char* device, samfast_model** out_model) {
  samfast_options options{};
  options.struct_size = sizeof options;
  options.device = device;
  return samfast_open_with(export_dir, &options, out_model);
}

SAMFAST_API void samfast_close(samfast_model* model) {
  // Destructors of backends do not throw; the guard is belt and braces.
  guarded([&] {
    if (!model) return;
    delete model;
#if defined(__GLIBC__)
    // A closed model frees hundreds of MB (weights, the encoder's activations) across the heaps of
    // OpenVINO's worker threads; glibc keeps freed pages resident until told, so a host that opens
    // and closes models would see its RSS creep up with fragmentation. Hand them back.
    malloc_trim(0);
#endif
  });
}

SAMFAST_API samfast_status samfast_get_info(const samfast_model* model, samfast_info* out_info) {
  return guarded([&] {
    need(model, "model");
    need(out_info, "out_info");
    samfast::known_bytes<samfast_info>(out_info->struct_size);
    samfast_info info{};
    model->impl->info(info);
    samfast::write_struct(*out_info, out_info->struct_size, info);
  });
}

SAMFAST_API samfast_status samfast_set_slice(samfast_model* model, const float* pixels, int height, int width,
                                             int channels, double spacing_y, double spacing_x) {
  return guarded([&] {
    need(model, "model");
    model->impl->set_slice(pixels, height, width, channels, spacing_y, spacing_x);
  });
}

SAMFAST_API samfast_status samfast_get_slice(const samfast_model* model, int* height, int* width, double* spacing_y,
                                             double* spacing_x) {
  return guarded([&] {
    need(model, "model");
    model->impl->slice(height, width, spacing_y, spacing_x);
  });
}

SAMFAST_API samfast_status samfast_predict(samfast_model* model, const samfast_prompt* prompt, samfast_output* out) {
  return guarded([&] {
    need(model, "model");
    need(prompt, "prompt");
    need(out, "out");
    const samfast_prompt p = samfast::read_struct(*prompt, samfast_prompt{});
    samfast_output o = samfast::read_struct(*out, samfast_output{});
    try {
      model->impl->predict(p, o);
    } catch (...) {
      samfast::write_struct(*out, out->struct_size, o);  // n_masks also tells a short buffer's need
      throw;
    }
    samfast::write_struct(*out, out->struct_size, o);
  });
}

SAMFAST_API samfast_status samfast_volume_options_init(samfast_volume_options* options, size_t struct_size) {
  return guarded([&] {
    need(options, "options");
    samfast_volume_options defaults;
    samfast::default_volume_options(defaults);
    samfast::write_struct(*options, struct_size, defaults);
  });
}

SAMFAST_API samfast_status samfast_segment_volume(samfast_model* model, const float* volume, int depth, int height,
                                                  int width, double spacing_z, double spacing_y, double spacing_x,
                                                  const float box3d[6], const samfast_volume_options* options,
                                                  uint8_t* out_mask, float* out_scores, float* out_boxes) {
  return guarded([&] {
    need(model, "model");
    samfast::segment_volume(*model->impl, volume, depth, height, width, spacing_z, spacing_y, spacing_x, box3d,
                            options, out_mask, out_scores, out_boxes);
  });
}

}  // extern "C"
