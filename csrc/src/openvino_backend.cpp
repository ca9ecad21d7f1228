// OpenVINO backend: the ONNX set `samfast export --format onnx` writes, run on the CPU as
// samfast/backends/openvino_backend.py runs it (LATENCY hint, f32 or opt-in bf16 inference
// precision, the encoder compiled for its one static input shape), plus the split decoder
// (samfast/export/split_decoder.py): the image side runs once per slice in encode(), so a prompt
// without mask input runs only decoder_prompt.onnx; a prompt with one runs decoder.onnx.
#include <openvino/openvino.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "backend.hpp"
#include "error.hpp"

namespace samfast {
namespace {

// One Core per process: it loads the CPU plugin once, and compiling is thread-safe.
ov::Core& core() {
  static ov::Core instance;
  return instance;
}

const std::array<const char*, 4> kStateNames{"image_tokens", "t2i_keys", "t2i_values", "i2t_queries"};

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.size() > 300 ? line.substr(0, 300) + "..." : line;
}

struct OpenVinoSlice final : SliceState {
  ov::Tensor embedding;                // (1, C, h, w)
  std::array<ov::Tensor, 4> state;     // the split decoder's image side, kStateNames order
};

struct Graph {
  ov::CompiledModel compiled;
  ov::InferRequest request;
};

class OpenVinoBackend final : public Backend {
 public:
  OpenVinoBackend(const Manifest& m, const BackendOptions& options) : manifest_(m), precision_(options.precision) {
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                      ov::hint::inference_precision(precision_ == "bf16" ? ov::element::bf16 : ov::element::f32)};
    if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
    const int64_t s = m.input_size, c = m.embedding_shape[0], h = m.embedding_shape[1], w = m.embedding_shape[2];
    // Static shapes where the input is one slice (OpenVINO picks its kernels for them); the
    // prompt side keeps its dynamic prompt and point axes.
    config_ = config;
    encoder_ = compile(read("encoder"), {{"images", ov::PartialShape{1, 3, s, s}}});
    image_side_ = compile(read("decoder_image"), {{"image_embeddings", ov::PartialShape{1, c, h, w}}});
    prompt_side_ = compile(read("decoder_prompt"), {});
    // The whole decoder serves prompts with a mask input only: read and checked now, compiled on
    // its first use (a quarter of the time samfast_open takes).
    decoder_model_ = read("decoder");
    slice_bytes_ = sizeof(float) * static_cast<size_t>(c * h * w);
    for (const char* name : kStateNames)
      slice_bytes_ += sizeof(float) * ov::shape_size(image_side_.compiled.output(name).get_shape());
  }

  std::shared_ptr<const SliceState> encode(const float* images) override {
    auto slice = std::make_shared<OpenVinoSlice>();
    try {
      const size_t s = manifest_.input_size;
      ov::Tensor input(ov::element::f32, {1, 3, s, s}, const_cast<float*>(images));
      // The graphs write straight into the slice's own tensors.
      slice->embedding = ov::Tensor(ov::element::f32, encoder_.compiled.output().get_shape());
      encoder_.request.set_input_tensor(input);
      encoder_.request.set_output_tensor(slice->embedding);
      encoder_.request.infer();
      image_side_.request.set_input_tensor(slice->embedding);
      for (size_t k = 0; k < kStateNames.size(); ++k) {
        auto output = image_side_.compiled.output(kStateNames[k]);
        slice->state[k] = ov::Tensor(ov::element::f32, output.get_shape());
        image_side_.request.set_tensor(output, slice->state[k]);
      }
      image_side_.request.infer();
      // The requests must not keep the caller's pixels or the slice's tensors alive.
      encoder_.request.set_input_tensor(ov::Tensor(ov::element::f32, {1, 3, s, s}));
    } catch (const ov::Exception& e) {
      fail(SAMFAST_ERR_RUNTIME, "OpenVINO encoder: " + first_line(e.what()));
    }
    return slice;
  }

  void decode(const SliceState& state, const DecoderPrompt& prompt, Decoded& out) override {
    const auto& slice = static_cast<const OpenVinoSlice&>(state);
    const size_t n = prompt.labels.size();
    const size_t low = manifest_.low_res_size;
    try {
      ov::Tensor coords(ov::element::f32, {1, n, 2}, const_cast<float*>(prompt.coords.data()));
      ov::Tensor labels(ov::element::f32, {1, n}, const_cast<float*>(prompt.labels.data()));
      if (prompt.mask_input && decoder_model_) {
        decoder_ = compile(decoder_model_, {});
        decoder_model_.reset();
      }
      Graph& graph = prompt.mask_input ? decoder_ : prompt_side_;
      ov::InferRequest& request = graph.request;
      float has_mask = 1.0f;
      if (prompt.mask_input) {
        request.set_tensor("image_embeddings", slice.embedding);
        request.set_tensor("mask_input", ov::Tensor(ov::element::f32, {1, 1, low, low}, const_cast<float*>(prompt.mask_input)));
        request.set_tensor("has_mask_input", ov::Tensor(ov::element::f32, {1}, &has_mask));
      } else {
        for (size_t k = 0; k < kStateNames.size(); ++k) request.set_tensor(kStateNames[k], slice.state[k]);
      }
      request.set_tensor("point_coords", coords);
      request.set_tensor("point_labels", labels);
      request.infer();
      const ov::Tensor masks = request.get_tensor("low_res_masks");
      const ov::Tensor iou = request.get_tensor("iou_predictions");
      if (masks.get_size() != 4 * low * low || iou.get_size() != 4)
        fail(SAMFAST_ERR_RUNTIME, "OpenVINO decoder gave " + masks.get_shape().to_string() + " logits and " +
                                      iou.get_shape().to_string() + " IoUs, not 4 mask tokens");
      out.low_res.assign(masks.data<const float>(), masks.data<const float>() + masks.get_size());
      out.iou.assign(iou.data<const float>(), iou.data<const float>() + 4);
    } catch (const ov::Exception& e) {
      fail(SAMFAST_ERR_RUNTIME, "OpenVINO decoder: " + first_line(e.what()));
    }
  }

  size_t slice_bytes() const override { return slice_bytes_; }
  std::string name() const override { return "openvino"; }
  std::string device() const override { return "cpu"; }
  std::string precision() const override { return precision_; }

 private:
  // Read one graph and check the metadata samfast/export/onnx_export.py stored in it against the
  // manifest (a folder whose manifest was edited or whose files were swapped is refused here) and
  // its inputs/outputs.
  std::shared_ptr<ov::Model> read(const std::string& role) {
    const Manifest& m = manifest_;
    const GraphEntry& entry = m.graph(role);
    const std::string path = m.path(entry.file);
    std::shared_ptr<ov::Model> model;
    try {
      model = core().read_model(path);
    } catch (const ov::Exception& e) {
      fail(SAMFAST_ERR_MANIFEST, path + " is not a readable ONNX graph (" + first_line(e.what()) + ")");
    }
    auto meta = [&](const char* key) {
      return model->has_rt_info("framework", key) ? model->get_rt_info<std::string>("framework", key)
                                                  : std::string("(none)");
    };
    auto mismatch = [&](const std::string& what, const std::string& manifest_value, const std::string& file_value) {
      fail(SAMFAST_ERR_MANIFEST, m.folder + "/manifest.json says " + what + " " + manifest_value + " but " +
                                     entry.file + " was exported for " + file_value +
                                     ": the manifest does not belong to these files");
    };
    if (meta("model") != m.model) mismatch("model", m.model, meta("model"));
    if (meta("weights") != m.weights) mismatch("weights", m.weights, meta("weights"));
    if (meta("graph") != role) mismatch("the " + role + " file is", entry.file, "the " + meta("graph") + " graph");
    if (meta("input_size") != std::to_string(m.input_size))
      mismatch("input_size", std::to_string(m.input_size), "input_size " + meta("input_size"));
    auto has = [&](const auto& ports, const std::string& name) {
      return std::any_of(ports.begin(), ports.end(), [&](const auto& p) { return p.get_names().count(name) > 0; });
    };
    for (const auto& name : entry.inputs)
      if (!has(model->inputs(), name)) fail(SAMFAST_ERR_MANIFEST, path + " has no input " + name + ": export the set again");
    for (const auto& name : entry.outputs)
      if (!has(model->outputs(), name)) fail(SAMFAST_ERR_MANIFEST, path + " has no output " + name + ": export the set again");
    return model;
  }

  Graph compile(const std::shared_ptr<ov::Model>& model, const std::map<std::string, ov::PartialShape>& shapes) {
    try {
      if (!shapes.empty()) model->reshape(shapes);
      Graph graph;
      graph.compiled = core().compile_model(model, "CPU", config_);
      graph.request = graph.compiled.create_infer_request();
      return graph;
    } catch (const ov::Exception& e) {
      fail(SAMFAST_ERR_RUNTIME, "OpenVINO cannot compile " + model->get_friendly_name() + " (" + first_line(e.what()) + ")");
    }
  }

  Manifest manifest_;
  std::string precision_;
  ov::AnyMap config_;
  Graph encoder_, image_side_, prompt_side_, decoder_;
  std::shared_ptr<ov::Model> decoder_model_;  // until decoder_ is compiled
  size_t slice_bytes_ = 0;
};

}  // namespace

bool openvino_has_bf16() {
  try {
    auto capabilities = core().get_property("CPU", ov::device::capabilities);
    return std::find(capabilities.begin(), capabilities.end(), ov::device::capability::BF16) != capabilities.end();
  } catch (const ov::Exception&) {
    return false;
  }
}

std::unique_ptr<Backend> make_openvino_backend(const Manifest& manifest, const BackendOptions& options) {
  return std::make_unique<OpenVinoBackend>(manifest, options);
}

}  // namespace samfast
