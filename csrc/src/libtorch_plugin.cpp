// libsamfast_libtorch.so: the TorchScript (and, when built with it, TensorRT) backends, behind
// samfast::Backend for libsamfast.so, which loads this library only when a torchscript or engine
// set is opened (plugin.hpp). LibTorch errors become samfast::Error here, first line only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <new>

#include "aten_backend.hpp"
#include "backend.hpp"
#include "error.hpp"
#include "plugin.hpp"

namespace samfast {
namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

template <class F>
auto translated(F&& body) {
  try {
    return body();
  } catch (const c10::OutOfMemoryError&) {
    throw std::bad_alloc();
  } catch (const c10::Error& e) {
    fail(SAMFAST_ERR_RUNTIME, "LibTorch: " + first_line(e.what_without_backtrace()));
  }
}

struct TorchSlice final : SliceState {
  at::Tensor embedding;  // undefined when the backend keeps it itself (TensorRT)
  uint64_t serial = 0;
};

class AtenAdapter final : public Backend {
 public:
  AtenAdapter(std::unique_ptr<AtenBackend> impl, const Manifest& m)
      : impl_(std::move(impl)), size_(m.input_size), low_(m.low_res_size),
        slice_bytes_(sizeof(float) * static_cast<size_t>(m.embedding_shape[0]) * m.embedding_shape[1] *
                     m.embedding_shape[2]),
        precision_(m.precision) {}

  std::shared_ptr<const SliceState> encode(const float* images) override {
    return translated([&] {
      c10::InferenceMode guard;
      auto slice = std::make_shared<TorchSlice>();
      current_ = 0;
      impl_->encode(at::from_blob(const_cast<float*>(images), {1, 3, size_, size_}, at::kFloat));
      slice->embedding = impl_->embedding();
      slice->serial = current_ = ++serial_;
      return std::shared_ptr<const SliceState>(slice);
    });
  }

  void decode(const SliceState& state, const DecoderPrompt& prompt, Decoded& out) override {
    translated([&] {
      const auto& slice = static_cast<const TorchSlice&>(state);
      if (slice.serial != current_) {
        if (!impl_->keeps_embeddings()) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
        impl_->use_embedding(slice.embedding);
        current_ = slice.serial;
      }
      c10::InferenceMode guard;
      const int64_t n = static_cast<int64_t>(prompt.labels.size());
      at::Tensor coords = at::from_blob(const_cast<float*>(prompt.coords.data()), {1, n, 2}, at::kFloat);
      at::Tensor labels = at::from_blob(const_cast<float*>(prompt.labels.data()), {1, n}, at::kFloat);
      at::Tensor mask = prompt.mask_input
                            ? at::from_blob(const_cast<float*>(prompt.mask_input), {1, 1, low_, low_}, at::kFloat)
                            : at::zeros({1, 1, low_, low_}, at::kFloat);
      at::Tensor has_mask = at::full({1}, prompt.mask_input ? 1.0f : 0.0f, at::kFloat);
      auto [low_res, iou] = impl_->decode(coords, labels, mask, has_mask);
      low_res = low_res.contiguous();
      iou = iou.contiguous();
      out.low_res.assign(low_res.data_ptr<float>(), low_res.data_ptr<float>() + low_res.numel());
      out.iou.assign(iou.data_ptr<float>(), iou.data_ptr<float>() + iou.numel());
      return 0;
    });
  }

  size_t slice_bytes() const override { return slice_bytes_; }
  int max_slices() const override { return impl_->keeps_embeddings() ? Backend::max_slices() : 1; }
  std::string name() const override { return impl_->name(); }
  std::string device() const override { return impl_->device(); }
  std::string precision() const override { return precision_; }

 private:
  std::unique_ptr<AtenBackend> impl_;
  int64_t size_, low_;
  size_t slice_bytes_;
  std::string precision_;
  uint64_t serial_ = 0, current_ = 0;  // the slice whose embedding impl_ holds
};

}  // namespace
}  // namespace samfast

extern "C" {

__attribute__((visibility("default"))) samfast::Backend* samfast_plugin_open(const samfast::Manifest* manifest,
                                                                             const samfast::BackendOptions* options) {
  using namespace samfast;
  return translated([&]() -> Backend* {
    std::unique_ptr<AtenBackend> impl;
    if (manifest->format == "torchscript") {
      impl = make_torchscript_backend(*manifest, options->device);
    } else {
#ifdef SAMFAST_WITH_TENSORRT
      impl = make_tensorrt_backend(*manifest, options->device);
#else
      fail(SAMFAST_ERR_UNSUPPORTED, manifest->folder + " holds TensorRT engines, but this libsamfast was built without "
                                                       "TensorRT: open the onnx or torchscript set instead, or rebuild "
                                                       "with TensorRT");
#endif
    }
    return new AtenAdapter(std::move(impl), *manifest);
  });
}

__attribute__((visibility("default"))) void samfast_plugin_set_threads(int n) { at::set_num_threads(n); }

}  // extern "C"

// The signatures plugin.hpp declares for libsamfast.so.
static_assert(std::is_same_v<decltype(&samfast_plugin_open), samfast_plugin_open_fn>);
static_assert(std::is_same_v<decltype(&samfast_plugin_set_threads), samfast_plugin_set_threads_fn>);
