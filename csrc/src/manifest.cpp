#include "manifest.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "error.hpp"
#include "sha256.hpp"

namespace fs = std::filesystem;

namespace samfast {
namespace {

const std::vector<std::string> kEncoderInputs{"images"};
const std::vector<std::string> kEncoderOutputs{"image_embeddings"};
const std::vector<std::string> kDecoderInputs{"image_embeddings", "point_coords", "point_labels", "mask_input",
                                              "has_mask_input"};
const std::vector<std::string> kDecoderOutputs{"iou_predictions", "low_res_masks"};
// samfast.export.split_decoder: IMAGE_SIDE_INPUTS, STATE_NAMES, PROMPT_SIDE_INPUTS/OUTPUTS.
const std::vector<std::string> kImageSideInputs{"image_embeddings"};
const std::vector<std::string> kStateNames{"image_tokens", "t2i_keys", "t2i_values", "i2t_queries"};
const std::vector<std::string> kPromptSideInputs{"image_tokens", "t2i_keys",     "t2i_values",
                                                 "i2t_queries",  "point_coords", "point_labels"};

using json = nlohmann::json;

[[noreturn]] void bad(const Manifest& m, const std::string& what) {
  fail(SAMFAST_ERR_MANIFEST, m.folder + "/manifest.json: " + what);
}

std::string join(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out + "]";
}

std::vector<std::string> string_list(const Manifest& m, const json& parent, const std::string& key,
                                     const std::string& where) {
  const json& list = require(m, parent, key, where);
  if (!list.is_array()) bad(m, where + key + " is not a list");
  std::vector<std::string> out;
  for (const auto& item : list) {
    if (!item.is_string()) bad(m, where + key + " holds a non-string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

// Same names, any order: TensorRT lists an engine's tensors in its own order.
bool same_names(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

GraphEntry graph(const Manifest& m, const std::string& name, const std::vector<std::string>& inputs,
                 const std::vector<std::string>& outputs) {
  const json& node = require(m, m.raw, name, "");
  if (!node.is_object()) bad(m, "\"" + name + "\" is not an object");
  GraphEntry entry;
  entry.file = require_string(m, node, "file", name + ".");
  if (entry.file.empty() || entry.file.find('/') != std::string::npos || entry.file.find("..") != std::string::npos)
    bad(m, name + ".file \"" + entry.file + "\" is not a plain file name");
  entry.inputs = string_list(m, node, "inputs", name + ".");
  entry.outputs = string_list(m, node, "outputs", name + ".");
  if (!same_names(entry.inputs, inputs) || !same_names(entry.outputs, outputs))
    bad(m, "the " + name + " takes " + join(entry.inputs) + " and gives " + join(entry.outputs) +
               "; libsamfast feeds " + join(inputs) + " and reads " + join(outputs) +
               " (segment-anything's ONNX decoder convention): export the set again");
  return entry;
}

void check_file(const Manifest& m, const std::string& name, bool verify_hashes) {
  const json* entry = nullptr;
  if (auto files = m.raw.find("files"); files != m.raw.end() && files->is_object())
    if (auto it = files->find(name); it != files->end()) entry = &*it;
  if (!entry || !entry->is_object()) bad(m, "\"files\" has no entry for " + name);
  fs::path path = fs::path(m.folder) / name;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    fail(SAMFAST_ERR_MANIFEST, name + " listed in " + m.folder + "/manifest.json is missing: export the set again");
  int64_t want = require_int(m, *entry, "bytes", "files." + name + ".");
  auto have = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec || have != want)
    fail(SAMFAST_ERR_MANIFEST, path.string() + " is " + std::to_string(have) + " bytes but the manifest says " +
                                   std::to_string(want) + ": the set is incomplete or was changed; export it again");
  if (verify_hashes) {
    std::string expected = require_string(m, *entry, "sha256", "files." + name + ".");
    std::string actual;
    try {
      actual = sha256_file(path.string());
    } catch (const std::exception& e) {
      fail(SAMFAST_ERR_MANIFEST, e.what());
    }
    if (actual != expected)
      fail(SAMFAST_ERR_MANIFEST, path.string() + " does not match its sha256 in the manifest (" + actual.substr(0, 16) +
                                     "... vs " + expected.substr(0, 16) + "...): export the set again");
  }
}

}  // namespace

const json& require(const Manifest& m, const json& parent, const std::string& key, const std::string& where) {
  if (!parent.is_object()) bad(m, "\"" + where + "\" is not an object");
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) bad(m, "field \"" + where + key + "\" is missing");
  return *it;
}

std::string require_string(const Manifest& m, const json& parent, const std::string& key, const std::string& where) {
  const json& v = require(m, parent, key, where);
  if (!v.is_string()) bad(m, "field \"" + where + key + "\" is not a string");
  return v.get<std::string>();
}

int64_t require_int(const Manifest& m, const json& parent, const std::string& key, const std::string& where) {
  const json& v = require(m, parent, key, where);
  // JSON has one number type: 3.0 is an integer too (as Python's json writes and reads it).
  if (v.is_number_integer()) return v.get<int64_t>();
  if (!v.is_number_float() || v.get<double>() != std::floor(v.get<double>()) || std::fabs(v.get<double>()) > 9.0e15)
    bad(m, "field \"" + where + key + "\" is not an integer");
  return static_cast<int64_t>(v.get<double>());
}

Manifest read_manifest(const std::string& folder, bool verify_hashes) {
  Manifest m;
  m.folder = folder;
  while (m.folder.size() > 1 && m.folder.back() == '/') m.folder.pop_back();
  std::error_code ec;
  if (!fs::exists(m.folder, ec)) fail(SAMFAST_ERR_NOT_FOUND, "export folder " + m.folder + " does not exist");
  if (!fs::is_directory(m.folder, ec)) fail(SAMFAST_ERR_NOT_FOUND, m.folder + " is not a folder");
  fs::path path = fs::path(m.folder) / "manifest.json";
  if (!fs::is_regular_file(path, ec))
    fail(SAMFAST_ERR_NOT_FOUND, "no manifest.json in " + m.folder +
                                    ": not an export folder (make one with `samfast export --format torchscript`)");
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) fail(SAMFAST_ERR_MANIFEST, "cannot read " + path.string());
  try {
    m.raw = json::parse(text.str());
  } catch (const json::exception& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 1, ..."
    if (auto end = what.find("] "); end != std::string::npos) what = what.substr(end + 2);
    fail(SAMFAST_ERR_MANIFEST, path.string() + " is not valid JSON (" + what + ")");
  }
  if (!m.raw.is_object()) bad(m, "not a JSON object");

  int64_t schema = require_int(m, m.raw, "schema", "");
  if (schema != kManifestSchema)
    bad(m, "schema " + std::to_string(schema) + " is not the one this libsamfast reads (" +
               std::to_string(kManifestSchema) + "): export the set with a matching samfast");
  m.format = require_string(m, m.raw, "format", "");
  if (m.format != "onnx" && m.format != "torchscript" && m.format != "engine")
    bad(m, "format is \"" + m.format +
               "\"; libsamfast runs \"onnx\" sets (OpenVINO), \"torchscript\" sets (LibTorch) and \"engine\" "
               "sets (TensorRT): `samfast export --format onnx`");
  m.model = require_string(m, m.raw, "model", "");
  m.precision = require_string(m, m.raw, "precision", "");
  if (m.format != "engine" && m.precision != "fp32")
    bad(m, "a" + std::string(m.format == "onnx" ? "n " : " ") + m.format + " set is fp32, this one says \"" +
               m.precision + "\"");
  if (m.format == "engine" && m.precision != "fp32" && m.precision != "fp16")
    bad(m, "engine precision \"" + m.precision + "\" is neither fp32 nor fp16");
  const json& weights = require(m, m.raw, "weights", "");
  m.weights = require_string(m, weights, "label", "weights.");
  m.normalization = require_string(m, m.raw, "normalization", "");
  if (m.normalization != "minmax" && m.normalization != "imagenet")
    bad(m, "normalization \"" + m.normalization + "\" is unknown (minmax or imagenet)");
  int64_t input_size = require_int(m, m.raw, "input_size", "");
  int64_t low_res_size = require_int(m, m.raw, "low_res_size", "");
  if (input_size < 16 || input_size > 8192 || low_res_size < 4 || low_res_size > 8192)
    bad(m, "input_size " + std::to_string(input_size) + " / low_res_size " + std::to_string(low_res_size) +
               " are implausible");
  m.input_size = static_cast<int>(input_size);
  m.low_res_size = static_cast<int>(low_res_size);
  const json& shape = require(m, m.raw, "embedding_shape", "");
  if (!shape.is_array() || shape.size() != 3) bad(m, "embedding_shape is not a list of 3 integers");
  for (int i = 0; i < 3; ++i) {
    const json& d = shape[i];
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > 1000000)
      bad(m, "embedding_shape is not a list of 3 positive integers");
    m.embedding_shape[i] = d.get<int>();
  }
  if (m.low_res_size != 4 * m.embedding_shape[1] || m.embedding_shape[1] != m.embedding_shape[2])
    bad(m, "low_res_size " + std::to_string(m.low_res_size) + " is not 4x the embedding grid " +
               std::to_string(m.embedding_shape[1]) + "x" + std::to_string(m.embedding_shape[2]));
  m.graphs["encoder"] = graph(m, "encoder", kEncoderInputs, kEncoderOutputs);
  m.graphs["decoder"] = graph(m, "decoder", kDecoderInputs, kDecoderOutputs);
  if (m.format == "onnx") {  // OpenVINO runs a click on the split decoder's prompt side
    if (!m.raw.contains("decoder_image") || !m.raw.contains("decoder_prompt"))
      bad(m, "the set has no split decoder (decoder_image / decoder_prompt): it was exported by an older "
             "samfast; export it again");
    m.graphs["decoder_image"] = graph(m, "decoder_image", kImageSideInputs, kStateNames);
    m.graphs["decoder_prompt"] = graph(m, "decoder_prompt", kPromptSideInputs, kDecoderOutputs);
  }
  auto files = m.raw.find("files");
  if (files == m.raw.end() || !files->is_object() || files->empty()) bad(m, "\"files\" lists no files");
  for (const auto& [name, entry] : files->items()) {
    (void)entry;
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      bad(m, "\"files\" names \"" + name + "\", not a plain file name");
    check_file(m, name, verify_hashes);
  }
  for (const auto& [role, entry] : m.graphs) check_file(m, entry.file, false);  // listed and present
  return m;
}

}  // namespace samfast
