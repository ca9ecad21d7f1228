// TensorRT backend: encoder.engine / decoder.engine built by samfast/export/tensorrt_build.py
// (`samfast export --format engine`), run as samfast/backends/tensorrt_backend.py runs them.
// Compiled only when CMake finds TensorRT and the CUDA runtime (SAMFAST_WITH_TENSORRT).
//
// Preprocessing and postprocessing stay on the CPU in model.cpp (so they are the same as for
// LibTorch); this file copies the prepared slice and prompts to the GPU, keeps the embedding there
// between set_slice and predict, and copies the decoder's outputs back.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aten_backend.hpp"
#include "error.hpp"

namespace samfast {
namespace {

void cuda_check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) fail(SAMFAST_ERR_RUNTIME, "CUDA " + what + ": " + cudaGetErrorString(status));
}

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override {
    if (severity > Severity::kERROR) return;
    std::lock_guard<std::mutex> lock(mutex_);
    last_ = message ? message : "";
  }
  std::string last() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_;
  }

 private:
  std::mutex mutex_;
  std::string last_;
};

// TensorRT >= 8 objects are freed with delete.
template <class T>
using Owned = std::unique_ptr<T>;

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* reserve(size_t bytes) {
    if (bytes > bytes_) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = nullptr;
      bytes_ = 0;
      cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
      bytes_ = bytes;
    }
    return ptr_;
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

nvinfer1::Dims dims_of(const at::Tensor& t) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<int32_t>(t.dim());
  for (int64_t i = 0; i < t.dim(); ++i) d.d[i] = t.size(i);
  return d;
}

std::vector<int64_t> sizes_of(const nvinfer1::Dims& d) {
  std::vector<int64_t> out;
  for (int32_t i = 0; i < d.nbDims; ++i) out.push_back(d.d[i]);
  return out;
}

std::string rebuild_hint(const Manifest& m) {
  return "rebuild with `samfast export --model " + m.model + " --format engine --precision " + m.precision + "`";
}

// "10.3.0.26" -> {10, 3, 0}
std::vector<int> version_numbers(const std::string& text) {
  std::vector<int> out;
  int value = 0;
  bool digit = false;
  for (char c : text + ".") {
    if (c >= '0' && c <= '9') {
      value = value * 10 + (c - '0');
      digit = true;
    } else if (digit) {
      out.push_back(value);
      value = 0;
      digit = false;
    }
  }
  return out;
}

class Engine {
 public:
  Engine(nvinfer1::IRuntime& runtime, Logger& logger, const Manifest& m, const std::string& file) : path_(m.path(file)) {
    std::ifstream in(path_, std::ios::binary);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) fail(SAMFAST_ERR_MANIFEST, path_ + ": cannot read the engine; " + rebuild_hint(m));
    engine_.reset(runtime.deserializeCudaEngine(data.data(), data.size()));
    if (!engine_)
      fail(SAMFAST_ERR_MANIFEST, path_ + " does not deserialize on this machine (" + logger.last() + "); " +
                                     rebuild_hint(m));
    context_.reset(engine_->createExecutionContext());
    if (!context_) fail(SAMFAST_ERR_RUNTIME, path_ + ": cannot create an execution context (" + logger.last() + ")");
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        fail(SAMFAST_ERR_MANIFEST, path_ + ": tensor " + name + " is not float32; " + rebuild_hint(m));
      (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_).push_back(name);
    }
  }

  // Bind inputs (host tensors copied in, or device pointers given) and run; outputs stay on the
  // device in this engine's buffers. Returns output shapes by name.
  std::map<std::string, std::vector<int64_t>> run(const std::map<std::string, at::Tensor>& host,
                                                  const std::map<std::string, std::pair<void*, nvinfer1::Dims>>& device,
                                                  cudaStream_t stream) {
    for (const std::string& name : inputs_) {
      void* address = nullptr;
      nvinfer1::Dims dims{};
      if (auto it = device.find(name); it != device.end()) {
        address = it->second.first;
        dims = it->second.second;
      } else {
        const at::Tensor& t = host.at(name);
        address = buffers_[name].reserve(t.nbytes());
        cuda_check(cudaMemcpyAsync(address, t.data_ptr(), t.nbytes(), cudaMemcpyHostToDevice, stream), "copy of " + name);
        dims = dims_of(t);
      }
      if (!context_->setInputShape(name.c_str(), dims))
        fail(SAMFAST_ERR_INVALID_ARGUMENT, name + " has a shape outside the engine's optimization profile");
      context_->setTensorAddress(name.c_str(), address);
    }
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const std::string& name : outputs_) {
      std::vector<int64_t> shape = sizes_of(context_->getTensorShape(name.c_str()));
      int64_t count = 1;
      for (int64_t s : shape) {
        if (s < 0) fail(SAMFAST_ERR_RUNTIME, "TensorRT left the shape of " + name + " unresolved");
        count *= s;
      }
      context_->setTensorAddress(name.c_str(), buffers_[name].reserve(count * sizeof(float)));
      shapes[name] = shape;
    }
    if (!context_->enqueueV3(stream)) fail(SAMFAST_ERR_RUNTIME, "TensorRT failed to run " + path_);
    return shapes;
  }

  void* output(const std::string& name) { return buffers_[name].get(); }

 private:
  std::string path_;
  Owned<nvinfer1::ICudaEngine> engine_;
  Owned<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> inputs_, outputs_;
  std::map<std::string, DeviceBuffer> buffers_;
};

class TensorRTBackend final : public AtenBackend {
 public:
  TensorRTBackend(const Manifest& m, const std::string& device) : manifest_(m) {
    int index = 0;
    if (device.rfind("cuda:", 0) == 0) index = std::stoi(device.substr(5));
    else if (device != "cuda")
      fail(SAMFAST_ERR_UNSUPPORTED, "TensorRT engines run on a CUDA GPU, not on \"" + device + "\"; use cuda");
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
      fail(SAMFAST_ERR_UNSUPPORTED, "TensorRT engines need a CUDA GPU and none is visible");
    if (index >= count)
      fail(SAMFAST_ERR_UNSUPPORTED, "device " + device + " asked for, but " + std::to_string(count) + " CUDA GPU(s) are visible");
    device_ = index;
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    check_identity();
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) fail(SAMFAST_ERR_RUNTIME, "cannot create the TensorRT runtime");
    encoder_ = std::make_unique<Engine>(*runtime_, logger_, m, m.graph("encoder").file);
    decoder_ = std::make_unique<Engine>(*runtime_, logger_, m, m.graph("decoder").file);
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    // The decoder's point axis holds the user's points plus a box's 2 corners or 1 padding point.
    const nlohmann::json& profile = require(m, require(m, m.raw, "decoder", ""), "profile", "decoder.");
    const nlohmann::json& coords = require(m, profile, "point_coords", "decoder.profile.");
    if (!coords.is_array() || coords.size() != 3 || !coords[2].is_array() || coords[2].size() != 3 ||
        !coords[2][1].is_number_integer())
      fail(SAMFAST_ERR_MANIFEST, m.folder + "/manifest.json: decoder.profile.point_coords is not [min, opt, max] shapes");
    max_points_ = coords[2][1].get<int64_t>();
  }

  ~TensorRTBackend() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    encoder_.reset();
    decoder_.reset();
    runtime_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  void encode(const at::Tensor& images) override {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    auto shapes = encoder_->run({{"images", images.contiguous()}}, {}, stream_);
    cuda_check(cudaStreamSynchronize(stream_), "encoder run");
    embedding_shape_ = shapes.at("image_embeddings");
    has_embedding_ = true;
  }

  std::pair<at::Tensor, at::Tensor> decode(const at::Tensor& coords, const at::Tensor& labels, const at::Tensor& mask,
                                           const at::Tensor& has_mask) override {
    if (!has_embedding_) fail(SAMFAST_ERR_NO_SLICE, "no slice set: call samfast_set_slice first");
    if (coords.size(1) > max_points_)
      fail(SAMFAST_ERR_INVALID_ARGUMENT,
           std::to_string(coords.size(1)) + " points in a prompt set (a box counts as 2, no box adds a padding point) "
           "exceed the engine limit of " + std::to_string(max_points_) + ": rebuild the engines with a larger limit");
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    nvinfer1::Dims embedding{};
    embedding.nbDims = static_cast<int32_t>(embedding_shape_.size());
    for (size_t i = 0; i < embedding_shape_.size(); ++i) embedding.d[i] = embedding_shape_[i];
    auto shapes = decoder_->run(
        {{"point_coords", coords.contiguous()}, {"point_labels", labels.contiguous()},
         {"mask_input", mask.contiguous()}, {"has_mask_input", has_mask.contiguous()}},
        {{"image_embeddings", {encoder_->output("image_embeddings"), embedding}}}, stream_);
    at::Tensor low_res = at::empty(shapes.at("low_res_masks"), at::kFloat);
    at::Tensor iou = at::empty(shapes.at("iou_predictions"), at::kFloat);
    cuda_check(cudaMemcpyAsync(low_res.data_ptr(), decoder_->output("low_res_masks"), low_res.nbytes(),
                               cudaMemcpyDeviceToHost, stream_), "copy of low_res_masks");
    cuda_check(cudaMemcpyAsync(iou.data_ptr(), decoder_->output("iou_predictions"), iou.nbytes(),
                               cudaMemcpyDeviceToHost, stream_), "copy of iou_predictions");
    cuda_check(cudaStreamSynchronize(stream_), "decoder run");
    return {low_res, iou};
  }

  void drop_embedding() override { has_embedding_ = false; }
  std::string name() const override { return "tensorrt"; }
  std::string device() const override { return "cuda:" + std::to_string(device_); }

 private:
  Manifest manifest_;
  Logger logger_;
  int device_ = 0;
  Owned<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<Engine> encoder_, decoder_;
  cudaStream_t stream_ = nullptr;
  std::vector<int64_t> embedding_shape_;
  bool has_embedding_ = false;
  int64_t max_points_ = 0;

  // An engine runs only on the GPU architecture and TensorRT version that built it (the manifest
  // records them, as samfast.export.tensorrt_build.gpu_identity writes them).
  void check_identity() {
    const Manifest& m = manifest_;
    std::string built_cc = require_string(m, m.raw, "compute_capability", "");
    std::string built_trt = require_string(m, m.raw, "tensorrt", "");
    auto gpu = m.raw.find("gpu_name");
    std::string built_gpu = gpu != m.raw.end() && gpu->is_string() ? gpu->get<std::string>() : "another GPU";
    cudaDeviceProp props{};
    cuda_check(cudaGetDeviceProperties(&props, device_), "cudaGetDeviceProperties");
    std::string here_cc = std::to_string(props.major) + "." + std::to_string(props.minor);
    int v = getInferLibVersion();  // MAJOR * 10000 + MINOR * 100 + PATCH since TensorRT 10
    std::vector<int> here{v / 10000, (v / 100) % 100, v % 100};
    std::vector<int> built = version_numbers(built_trt);
    built.resize(3, -1);
    char here_trt[32];
    std::snprintf(here_trt, sizeof here_trt, "%d.%d.%d", here[0], here[1], here[2]);
    if (built_cc != here_cc || built != here)
      fail(SAMFAST_ERR_MANIFEST, "engines in " + m.folder + " were built for " + built_gpu + " (sm_" + built_cc +
                                     ") with TensorRT " + built_trt + "; this machine has " + props.name + " (sm_" +
                                     here_cc + ") with TensorRT " + here_trt + ": " + rebuild_hint(m));
  }
};

}  // namespace

std::unique_ptr<AtenBackend> make_tensorrt_backend(const Manifest& manifest, const std::string& device) {
  return std::make_unique<TensorRTBackend>(manifest, device);
}

}  // namespace samfast
