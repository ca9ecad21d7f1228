// LibTorch backend: the encoder.pt / decoder.pt traced by samfast/export/torchscript_export.py,
// run as samfast/backends/torchscript_backend.py runs them (fp32, inference mode).
#include <torch/cuda.h>
#include <torch/script.h>

#include <string>
#include <unordered_map>

#include "aten_backend.hpp"
#include "error.hpp"

namespace samfast {
namespace {

constexpr const char* kMetadataFile = "samfast.json";  // torch.jit.save _extra_files entry

class TorchScriptBackend final : public AtenBackend {
 public:
  TorchScriptBackend(const Manifest& manifest, const std::string& device) : device_(parse_device(device)) {
    encoder_ = load(manifest, manifest.graph("encoder").file, "encoder");
    decoder_ = load(manifest, manifest.graph("decoder").file, "decoder");
  }

  void encode(const at::Tensor& images) override {
    c10::InferenceMode guard;
    embedding_ = encoder_.forward({images.to(device_)}).toTensor();
  }

  std::pair<at::Tensor, at::Tensor> decode(const at::Tensor& coords, const at::Tensor& labels, const at::Tensor& mask,
                                           const at::Tensor& has_mask) override {
    c10::InferenceMode guard;
    auto out = decoder_
                   .forward({embedding_, coords.to(device_), labels.to(device_), mask.to(device_), has_mask.to(device_)})
                   .toTuple();
    at::Tensor iou = out->elements().at(0).toTensor();
    at::Tensor low_res = out->elements().at(1).toTensor();
    return {low_res.to(at::kCPU, at::kFloat), iou.to(at::kCPU, at::kFloat)};
  }

  void drop_embedding() override { embedding_ = at::Tensor(); }
  bool keeps_embeddings() const override { return true; }
  at::Tensor embedding() const override { return embedding_; }
  void use_embedding(const at::Tensor& embedding) override { embedding_ = embedding; }
  std::string name() const override { return "libtorch"; }
  std::string device() const override { return device_.str(); }

 private:
  c10::Device device_;
  torch::jit::Module encoder_, decoder_;
  at::Tensor embedding_;

  static c10::Device parse_device(const std::string& text) {
    c10::Device device(c10::kCPU);
    try {
      device = c10::Device(text);
    } catch (const std::exception&) {
      fail(SAMFAST_ERR_INVALID_ARGUMENT, "device \"" + text + "\" unknown; use cpu, cuda or cuda:N");
    }
    if (device.is_cuda()) {
      if (!torch::cuda::is_available())
        fail(SAMFAST_ERR_UNSUPPORTED, "device " + text + " asked for, but LibTorch sees no CUDA GPU");
      if (!device.has_index()) device = c10::Device(c10::kCUDA, 0);
      if (device.index() >= static_cast<int>(torch::cuda::device_count()))
        fail(SAMFAST_ERR_UNSUPPORTED, "device " + text + " asked for, but LibTorch sees " +
                                          std::to_string(torch::cuda::device_count()) + " CUDA GPU(s)");
    } else if (!device.is_cpu()) {
      fail(SAMFAST_ERR_UNSUPPORTED, "device \"" + text + "\" is not supported; use cpu or cuda");
    }
    return device;
  }

  // Load one file and check the samfast.json stored inside it against the manifest: a folder whose
  // manifest was edited or whose files were swapped for another model's is refused here.
  torch::jit::Module load(const Manifest& m, const std::string& file, const std::string& graph) {
    std::string path = m.path(file);
    std::unordered_map<std::string, std::string> extra{{kMetadataFile, ""}};
    torch::jit::Module module;
    try {
      module = torch::jit::load(path, device_, extra);
    } catch (const std::exception& e) {
      std::string first = e.what();
      first = first.substr(0, first.find('\n'));
      fail(SAMFAST_ERR_MANIFEST, path + " is not a loadable TorchScript file (" + first + ")");
    }
    module.eval();
    nlohmann::json meta;
    try {
      meta = nlohmann::json::parse(extra[kMetadataFile].empty() ? "{}" : extra[kMetadataFile]);
    } catch (const nlohmann::json::exception&) {
      fail(SAMFAST_ERR_MANIFEST, path + " carries unreadable " + std::string(kMetadataFile) + " metadata");
    }
    if (!meta.is_object()) fail(SAMFAST_ERR_MANIFEST, path + " carries no " + std::string(kMetadataFile) + " object");
    auto text = [&](const char* key) {
      auto v = meta.find(key);
      return v != meta.end() && v->is_string() ? v->get<std::string>() : std::string("(none)");
    };
    auto number = [&](const char* key) {
      auto v = meta.find(key);
      return v != meta.end() && v->is_number() ? v->get<int64_t>() : int64_t(-1);
    };
    auto mismatch = [&](const std::string& what, const std::string& manifest_value, const std::string& file_value) {
      fail(SAMFAST_ERR_MANIFEST, m.folder + "/manifest.json says " + what + " " + manifest_value + " but " + file +
                                     " was exported for " + file_value + ": the manifest does not belong to these files");
    };
    if (text("model") != m.model) mismatch("model", m.model, text("model"));
    if (text("weights") != m.weights) mismatch("weights", m.weights, text("weights"));
    if (text("graph") != graph) mismatch("the " + graph + " file is", file, "the " + text("graph") + " graph");
    if (number("input_size") != m.input_size)
      mismatch("input_size", std::to_string(m.input_size), "input_size " + std::to_string(number("input_size")));
    if (number("low_res_size") != m.low_res_size)
      mismatch("low_res_size", std::to_string(m.low_res_size), "low_res_size " + std::to_string(number("low_res_size")));
    return module;
  }
};

}  // namespace

std::unique_ptr<AtenBackend> make_torchscript_backend(const Manifest& manifest, const std::string& device) {
  return std::make_unique<TorchScriptBackend>(manifest, device);
}

}  // namespace samfast
