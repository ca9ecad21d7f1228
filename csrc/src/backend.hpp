// What the model needs from a runtime, in plain C++ (no LibTorch): encode one prepared slice into
// a state the backend can decode prompts against, in segment-anything's ONNX decoder convention.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace samfast {

// What a backend keeps of one encoded slice (the embedding; OpenVINO also the split decoder's
// image side). Immutable once made: the slice cache and the current slice share it.
class SliceState {
 public:
  virtual ~SliceState() = default;
};

// One prompt set in the model's input frame: n points (x, y) with labels, box corners included as
// points labelled 2 and 3 or a padding point labelled -1 (Prompts.to_sam_onnx).
struct DecoderPrompt {
  std::vector<float> coords;          // n x 2
  std::vector<float> labels;          // n
  const float* mask_input = nullptr;  // low_res_size^2 logits, or nullptr
};

// The decoder's outputs for all 4 mask tokens.
struct Decoded {
  std::vector<float> low_res;  // 4 x L x L logits
  std::vector<float> iou;      // 4 predicted IoUs
};

struct BackendOptions {
  std::string device;     // "cpu", "cuda", "cuda:N" (checked for syntax)
  std::string precision;  // "fp32" or, for OpenVINO, "bf16"
  int threads = 0;        // 0: the backend's default
};

class Backend {
 public:
  virtual ~Backend() = default;
  // images: 3 x S x S float32, normalised and padded.
  virtual std::shared_ptr<const SliceState> encode(const float* images) = 0;
  virtual void decode(const SliceState& slice, const DecoderPrompt& prompt, Decoded& out) = 0;
  // Bytes one SliceState holds (the slice cache's memory bound is slots x this).
  virtual size_t slice_bytes() const = 0;
  // Most SliceStates the backend can hold at once (TensorRT keeps one embedding on the GPU).
  virtual int max_slices() const { return 1 << 20; }
  virtual std::string name() const = 0;
  virtual std::string device() const = 0;
  virtual std::string precision() const = 0;
};

std::unique_ptr<Backend> make_openvino_backend(const Manifest& manifest, const BackendOptions& options);
// Whether the CPU runs bf16 natively for OpenVINO (AVX-512 BF16 or AMX).
bool openvino_has_bf16();

}  // namespace samfast
