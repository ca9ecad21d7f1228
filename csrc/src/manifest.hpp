// manifest.json of an exported set (written by samfast/export/artifacts.py): the fields libsamfast
// needs, checked against the folder (every listed file present, of its size and sha256).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace samfast {

// The schema samfast.export.manifest.EXPORT_SCHEMA writes; another one is refused.
constexpr int kManifestSchema = 1;

struct GraphEntry {
  std::string file;
  std::vector<std::string> inputs, outputs;
};

struct Manifest {
  std::string folder;
  std::string format;     // "onnx", "torchscript" or "engine"
  std::string model;      // registry name
  std::string weights;    // weights label, e.g. "sha256:79d8..." or "RANDOM WEIGHTS (seed 0)"
  std::string precision;  // "fp32" / "fp16"
  std::string normalization;
  int input_size = 0;
  int low_res_size = 0;
  std::array<int, 3> embedding_shape{};
  // "encoder", "decoder"; ONNX sets also "decoder_image" and "decoder_prompt" (the split decoder).
  std::map<std::string, GraphEntry> graphs;
  nlohmann::json raw;  // the whole document (engine sets read their GPU identity and profiles)

  std::string path(const std::string& file) const { return folder + "/" + file; }
  const GraphEntry& graph(const std::string& role) const { return graphs.at(role); }
};

// Read and check `folder`/manifest.json. Throws samfast::Error: SAMFAST_ERR_NOT_FOUND when the
// folder or its manifest does not exist, SAMFAST_ERR_MANIFEST for anything inconsistent.
// verify_hashes: also recompute each file's sha256 (sizes are always checked).
Manifest read_manifest(const std::string& folder, bool verify_hashes = true);

// Helpers for backends that read more of the document; they throw SAMFAST_ERR_MANIFEST.
const nlohmann::json& require(const Manifest& m, const nlohmann::json& parent, const std::string& key,
                              const std::string& where);
std::string require_string(const Manifest& m, const nlohmann::json& parent, const std::string& key,
                           const std::string& where);
int64_t require_int(const Manifest& m, const nlohmann::json& parent, const std::string& key,
                    const std::string& where);

}  // namespace samfast
