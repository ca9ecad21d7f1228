#include "plugin.hpp"

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <string>

#include "error.hpp"
#include "samfast.h"

namespace samfast {
namespace {

struct Plugin {
  samfast_plugin_open_fn open = nullptr;
  samfast_plugin_set_threads_fn set_threads = nullptr;
  std::string error;  // why it could not be loaded
};

std::atomic<int> pending_threads{0};
std::atomic<samfast_plugin_set_threads_fn> loaded_set_threads{nullptr};

#ifdef SAMFAST_WITH_LIBTORCH
// The folder libsamfast.so was loaded from: the plugin is installed next to it.
std::string own_folder() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&samfast_version), &info) || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
#endif

Plugin& plugin() {
  static Plugin loaded;
  static std::once_flag once;
  std::call_once(once, [] {
#ifndef SAMFAST_WITH_LIBTORCH
    loaded.error = "this libsamfast was built without LibTorch (SAMFAST_WITH_LIBTORCH=OFF)";
#else
    const std::string path = own_folder() + "/" SAMFAST_PLUGIN_FILE;
    // Never closed: LibTorch does not support being unloaded.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      loaded.error = "cannot load " + path + " (" + (why ? why : "unknown error") + ")";
      return;
    }
    loaded.open = reinterpret_cast<samfast_plugin_open_fn>(dlsym(handle, "samfast_plugin_open"));
    loaded.set_threads = reinterpret_cast<samfast_plugin_set_threads_fn>(dlsym(handle, "samfast_plugin_set_threads"));
    if (!loaded.open || !loaded.set_threads) {
      loaded.open = nullptr;
      loaded.error = path + " is not a libsamfast plugin of this version";
      return;
    }
    if (int n = pending_threads.load()) loaded.set_threads(n);
    loaded_set_threads.store(loaded.set_threads);
#endif
  });
  return loaded;
}

}  // namespace

std::unique_ptr<Backend> open_plugin_backend(const Manifest& manifest, const BackendOptions& options) {
  Plugin& p = plugin();
  if (!p.open)
    fail(SAMFAST_ERR_UNSUPPORTED, manifest.folder + " is a " + manifest.format + " set, which runs on LibTorch" +
                                      (manifest.format == "engine" ? " and TensorRT" : "") + ", but " + p.error +
                                      ": open the set's onnx export (OpenVINO) instead");
  return std::unique_ptr<Backend>(p.open(&manifest, &options));
}

void plugin_set_threads(int n) {
  // Applied now if LibTorch is loaded; otherwise when it loads (an OpenVINO-only host never maps it).
  pending_threads.store(n);
  if (auto set = loaded_set_threads.load()) set(n);
}

}  // namespace samfast
