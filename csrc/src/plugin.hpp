// The LibTorch backends (TorchScript, and TensorRT which moves tensors with ATen) live in a
// separate library, libsamfast_libtorch.so, next to libsamfast.so. libsamfast loads it with dlopen
// when a torchscript or engine set is opened, so a host that only opens ONNX sets never maps
// LibTorch, and a build with SAMFAST_WITH_LIBTORCH=OFF needs only OpenVINO.
#pragma once

#include <memory>

#include "backend.hpp"
#include "manifest.hpp"

// What the plugin exports (C names, C++ types: both libraries come from one build). The open
// function throws samfast::Error like any backend constructor.
extern "C" {
typedef samfast::Backend* (*samfast_plugin_open_fn)(const samfast::Manifest* manifest,
                                                    const samfast::BackendOptions* options);
typedef void (*samfast_plugin_set_threads_fn)(int n);
}
#define SAMFAST_PLUGIN_FILE "libsamfast_libtorch.so"

namespace samfast {

// The backend for a torchscript or engine set, from the plugin.
std::unique_ptr<Backend> open_plugin_backend(const Manifest& manifest, const BackendOptions& options);
// LibTorch's intra-op threads: now if the plugin is loaded, else when it loads.
void plugin_set_threads(int n);

}  // namespace samfast
