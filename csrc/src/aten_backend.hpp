// The LibTorch-side interface (libsamfast_libtorch.so only): the TorchScript and TensorRT backends
// take ATen tensors; libtorch_plugin.cpp adapts them to samfast::Backend (backend.hpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>

#include "manifest.hpp"

namespace samfast {

class AtenBackend {
 public:
  virtual ~AtenBackend() = default;
  // images: (1, 3, S, S) float32 on the CPU, normalised and padded. Keeps the embedding.
  virtual void encode(const at::Tensor& images) = 0;
  // CPU float32 inputs: point_coords (B, N, 2), point_labels (B, N), mask_input (B, 1, L, L),
  // has_mask_input (1). Returns (low_res_masks (B, 4, L, L), iou_predictions (B, 4)), CPU float32.
  virtual std::pair<at::Tensor, at::Tensor> decode(const at::Tensor& point_coords, const at::Tensor& point_labels,
                                                   const at::Tensor& mask_input, const at::Tensor& has_mask_input) = 0;
  virtual void drop_embedding() = 0;
  // Backends that can hand out their embedding and take one back hold a slice cache; the others
  // (TensorRT: the embedding lives in its own GPU buffer) keep the current slice only.
  virtual bool keeps_embeddings() const { return false; }
  virtual at::Tensor embedding() const { return at::Tensor(); }
  virtual void use_embedding(const at::Tensor& embedding) {}
  virtual std::string name() const = 0;
  virtual std::string device() const = 0;
};

// device: "cpu", "cuda" or "cuda:N" (already checked for syntax).
std::unique_ptr<AtenBackend> make_torchscript_backend(const Manifest& manifest, const std::string& device);

#ifdef SAMFAST_WITH_TENSORRT
std::unique_ptr<AtenBackend> make_tensorrt_backend(const Manifest& manifest, const std::string& device);
#endif

}  // namespace samfast
