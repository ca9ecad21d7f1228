/*
 * samfast.h - C interface of libsamfast: Segment Anything (LiteMedSAM, SAM ViT-B/H) on one slice,
 * from a folder exported by the samfast Python package:
 *   `samfast export --format onnx`         run by OpenVINO on the CPU (always built);
 *   `samfast export --format torchscript`  run by LibTorch (builds with SAMFAST_WITH_LIBTORCH=ON;
 *                                          LibTorch is loaded only when such a set is opened);
 *   `samfast export --format engine`       run by TensorRT (builds that found TensorRT).
 *
 * Semantics are those of samfast.Predictor (segment-anything's SamPredictor): the slice is taken
 * as given (normalise intensities first, e.g. Putz for MRI), resized so its longest side is the
 * model's input size (bilinear, antialiased), normalised as the model was trained ("minmax" for
 * LiteMedSAM, ImageNet mean/std on 0..255 for SAM), padded bottom/right; prompts are in slice pixel
 * coordinates (x = column, y = row); masks come back at the slice's size. All of this is plain
 * C++ inside the library, whatever the backend.
 *
 * SPLIT DECODER AND SLICE CACHE. On ONNX sets, samfast_set_slice runs the encoder and the image
 * side of the split decoder once; a prompt without mask_input then runs only the decoder's prompt
 * side (a prompt with mask_input runs the whole decoder, compiled on its first use). Each handle
 * keeps the encodings of the last `cache_slices` distinct slices it was given (samfast_options;
 * default SAMFAST_DEFAULT_CACHE_SLICES): setting one of them again (same size, channels and pixel
 * values, recognised by the SHA-256 of the pixels) skips the encoder. Memory bound of the cache:
 * cache_slices * samfast_info.slice_bytes (LiteMedSAM: 14 MiB a slice on ONNX, 4 MiB on LibTorch;
 * TensorRT keeps the current slice only).
 *
 * MEMORY. samfast_close frees everything the handle holds and (glibc) trims the heap, so a host
 * that opens and closes models does not keep the freed pages resident.
 *
 * ERRORS. Every function that can fail returns a samfast_status. On failure, samfast_last_error()
 * gives a one-line message. No C++ exception ever crosses this interface, and the library never
 * aborts or exits the process on bad input.
 *
 * THREAD SAFETY.
 *  - A samfast_model is NOT safe for concurrent use: two threads must not call functions on the
 *    same handle at the same time (serialise with your own lock). A handle may move between
 *    threads between calls.
 *  - Distinct handles are independent and may be used concurrently from different threads
 *    (each holds its own modules, embedding and buffers).
 *  - samfast_last_error() is thread-local: it reports the last failure of a call made on the
 *    calling thread, and is valid until that thread's next samfast call.
 *  - samfast_set_num_threads() changes a process-wide setting (LibTorch's intra-op thread pool,
 *    shared by every handle and by a Python torch in the same process, and the thread count of
 *    OpenVINO handles opened afterwards): call it once, before opening models, not while another
 *    thread is predicting.
 *  - samfast_version(), samfast_status_name(), samfast_has_tensorrt() and samfast_has_backend()
 *    are safe anywhere.
 *
 * STRUCT SIZES (the ABI policy of csrc/README.md). Every public struct starts with
 * `size_t struct_size`, which the caller sets to the struct's size in the header it was compiled
 * against: with the struct's SAMFAST_*_INIT initialiser (samfast_volume_options_init for the volume
 * options), e.g. `samfast_prompt prompt = SAMFAST_PROMPT_INIT(.box = box);`. The library reads and
 * writes only the fields that fit within struct_size: it gives defaults to fields an older host's
 * struct lacks, and leaves fields it does not know (a newer header's) as the caller set them.
 * A struct_size of 0 (the struct was not initialised) or one smaller than the oldest layout this
 * library reads is SAMFAST_ERR_INVALID_ARGUMENT, and the message names the struct.
 */
#ifndef SAMFAST_H
#define SAMFAST_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(SAMFAST_BUILDING)
#define SAMFAST_API __declspec(dllexport)
#elif defined(_WIN32)
#define SAMFAST_API __declspec(dllimport)
#else
#define SAMFAST_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header and of the library built with it (samfast_version() at run time;
   CMake reads the project version from this line). It versions the C interface
   (the 0.x series: a minor version may change it, see csrc/README.md) and moves independently of
   the Python package's version. */
#define SAMFAST_VERSION "0.3.0"

/* Slices whose encodings a handle keeps when samfast_options.cache_slices is 0. */
#define SAMFAST_DEFAULT_CACHE_SLICES 4

typedef enum samfast_status {
  SAMFAST_OK = 0,
  SAMFAST_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad size or channel count, NaN/inf, bad label,
                                       empty or inverted box, no prompt at all */
  SAMFAST_ERR_NOT_FOUND = 2,        /* the export folder, or its manifest.json, does not exist */
  SAMFAST_ERR_MANIFEST = 3,         /* manifest unreadable or inconsistent with the folder: wrong
                                       format or schema, files missing or of another size/sha256,
                                       files exported for another model, engines for another GPU */
  SAMFAST_ERR_OUT_OF_RANGE = 4,     /* a box corner or point lies outside the slice */
  SAMFAST_ERR_BUFFER_TOO_SMALL = 5, /* an output capacity is smaller than what the call writes */
  SAMFAST_ERR_NO_SLICE = 6,         /* samfast_predict before a successful samfast_set_slice */
  SAMFAST_ERR_UNSUPPORTED = 7,      /* backend, device, format or precision not available in this
                                       build or on this machine (e.g. bf16 without native bf16) */
  SAMFAST_ERR_RUNTIME = 8,          /* OpenVINO / LibTorch / TensorRT / CUDA failed while running */
  SAMFAST_ERR_OUT_OF_MEMORY = 9
} samfast_status;

/* One opened export folder: modules, the current slice's embedding and geometry. */
typedef struct samfast_model samfast_model;

/* Filled by samfast_get_info; the caller sets struct_size (SAMFAST_INFO_INIT()). */
typedef struct samfast_info {
  size_t struct_size;     /* set by the caller: sizeof(samfast_info) */
  char model[32];         /* registry name from the manifest, e.g. "litemedsam" */
  char weights[96];       /* weights label from the manifest ("sha256:..." or "RANDOM WEIGHTS ...") */
  char format[16];        /* "onnx", "torchscript" or "engine" */
  char backend[16];       /* "openvino", "libtorch" or "tensorrt" */
  char device[16];        /* "cpu", "cuda:0", ... */
  char precision[8];      /* what the backend computes in: "fp32", "bf16" (OpenVINO) or "fp16" */
  char normalization[16]; /* "minmax" or "imagenet" */
  int input_size;         /* side of the square the encoder sees (256 LiteMedSAM, 1024 SAM) */
  int low_res_size;       /* side of the low-res logits (mask_input / low_res buffers) */
  int embedding_channels, embedding_height, embedding_width;
  int cache_slices;       /* slices whose encodings this handle keeps */
  size_t slice_bytes;     /* bytes one kept slice holds (embedding, split decoder state) */
} samfast_info;

/* How samfast_open_with opens a set. Initialise it with SAMFAST_OPTIONS_INIT() (every field zero: the
   defaults) and set what you need, e.g. SAMFAST_OPTIONS_INIT(.backend = "openvino"). */
typedef struct samfast_options {
  size_t struct_size;    /* set by the caller: sizeof(samfast_options) */
  const char* backend;   /* NULL or "": the set's format decides ("onnx" -> "openvino",
                            "torchscript" -> "libtorch", "engine" -> "tensorrt"); else one of those
                            names, which must be the one for the set's format */
  const char* device;    /* as samfast_open's device; OpenVINO runs on "cpu" only */
  const char* precision; /* NULL or "": fp32 (engines: the set's precision). "bf16": OpenVINO runs
                            in bf16 (INFERENCE_PRECISION_HINT), only on CPUs with native bf16
                            (AVX-512 BF16 or AMX), else SAMFAST_ERR_UNSUPPORTED */
  int cache_slices;      /* >= 1: slices kept (see SLICE CACHE); 0: SAMFAST_DEFAULT_CACHE_SLICES */
  int threads;           /* OpenVINO threads of this handle; 0: samfast_set_num_threads' value,
                            else OpenVINO's default (all cores) */
} samfast_options;

/* One prompt set, in slice pixel coordinates. At least one of box, points, mask_input. */
typedef struct samfast_prompt {
  size_t struct_size;      /* set by the caller: sizeof(samfast_prompt) */
  const float* box;        /* 4 floats x0, y0, x1, y1 (x0 < x1, y0 < y1, inside the slice), or NULL */
  const float* points;     /* n_points (x, y) pairs, or NULL when n_points == 0 */
  const int* labels;       /* n_points labels: 1 foreground, 0 background */
  int n_points;
  const float* mask_input; /* low_res_size * low_res_size logits from an earlier call, or NULL */
  int multimask;           /* 0: one mask (token 0); non-zero: three masks (tokens 1-3) */
} samfast_prompt;

/* Where samfast_predict writes. Capacities count elements (bytes for masks, floats otherwise); a
   capacity smaller than the call needs is SAMFAST_ERR_BUFFER_TOO_SMALL (n_masks then says how many
   masks the call would have written). */
typedef struct samfast_output {
  size_t struct_size;      /* set by the caller: sizeof(samfast_output) */
  uint8_t* masks;          /* required: n_masks * height * width, row-major, 1 inside / 0 outside */
  size_t masks_capacity;
  float* iou;              /* n_masks predicted IoUs, or NULL */
  size_t iou_capacity;
  float* low_res;          /* n_masks * low_res_size^2 low-res logits (one can be fed back as
                              mask_input), or NULL */
  size_t low_res_capacity;
  int n_masks;             /* written by samfast_predict: 1 or 3 */
} samfast_output;

/* Initialisers that set struct_size (see STRUCT SIZES) and any fields named, the rest zero:
     samfast_info info = SAMFAST_INFO_INIT();
     samfast_output out = SAMFAST_OUTPUT_INIT(.masks = mask, .masks_capacity = n);
     samfast_open_with(dir, &(samfast_options)SAMFAST_OPTIONS_INIT(.cache_slices = 2), &model);
   They expand to a braced initialiser with designators (C99; C++20 takes them too, fields in order).
   Without them: zero the struct, then set struct_size = sizeof the struct. */
#define SAMFAST_INFO_INIT(...) {.struct_size = sizeof(samfast_info), __VA_ARGS__}
#define SAMFAST_OPTIONS_INIT(...) {.struct_size = sizeof(samfast_options), __VA_ARGS__}
#define SAMFAST_PROMPT_INIT(...) {.struct_size = sizeof(samfast_prompt), __VA_ARGS__}
#define SAMFAST_OUTPUT_INIT(...) {.struct_size = sizeof(samfast_output), __VA_ARGS__}

/* The loaded library's version: the SAMFAST_VERSION it was built with. A host compares it with the
   SAMFAST_VERSION of the header it was compiled against (see csrc/README.md, ABI policy). */
SAMFAST_API const char* samfast_version(void);

/* Name of a status code, e.g. "SAMFAST_ERR_MANIFEST". */
SAMFAST_API const char* samfast_status_name(samfast_status status);

/* Message of the last failing call on this thread ("" if none). See THREAD SAFETY. */
SAMFAST_API const char* samfast_last_error(void);

/* 1 when this build has the TensorRT backend, else 0. */
SAMFAST_API int samfast_has_tensorrt(void);

/* 1 when this build has the backend named ("openvino", "libtorch", "tensorrt"), else 0. */
SAMFAST_API int samfast_has_backend(const char* name);

/* Process-wide number of CPU threads (n >= 1): LibTorch's intra-op pool, and OpenVINO handles
   opened afterwards without samfast_options.threads. */
SAMFAST_API samfast_status samfast_set_num_threads(int n);

/*
 * Open an export folder (the one holding manifest.json). The manifest decides the backend:
 * "onnx" sets run on OpenVINO, "torchscript" sets on LibTorch, "engine" sets on TensorRT.
 * Every file listed in the manifest is checked (present, size, sha256) and the metadata inside
 * the graph files must name the manifest's model, weights and sizes, and each graph's role.
 * device: NULL or "" (cpu, cuda for engines), "cpu", "cuda" or "cuda:N".
 * On success *out_model is a new handle (free with samfast_close); on failure it is set to NULL.
 */
SAMFAST_API samfast_status samfast_open(const char* export_dir, const char* device,
                                        samfast_model** out_model);

/* samfast_open with options (NULL: all defaults; else struct_size set, see STRUCT SIZES). */
SAMFAST_API samfast_status samfast_open_with(const char* export_dir, const samfast_options* options,
                                             samfast_model** out_model);

/* Free a handle and everything it holds. NULL is accepted. */
SAMFAST_API void samfast_close(samfast_model* model);

/* Describe the handle: fills out_info (its struct_size set, see STRUCT SIZES). */
SAMFAST_API samfast_status samfast_get_info(const samfast_model* model, samfast_info* out_info);

/*
 * Encode one slice: pixels is height * width * channels floats, row-major with interleaved
 * channels (channels 1 or 3; one channel is repeated to three, as the Python predictor does).
 * spacing_y / spacing_x (mm per pixel, > 0) are kept with the slice for the host's use (areas,
 * geometry); like the Python predictor the model itself works in pixels and does not resample.
 * A slice in the handle's cache is not encoded again (see SLICE CACHE).
 * On an argument error the previous slice stays set; on a runtime error none is set.
 */
SAMFAST_API samfast_status samfast_set_slice(samfast_model* model, const float* pixels, int height,
                                             int width, int channels, double spacing_y,
                                             double spacing_x);

/* Size and spacing of the current slice (any pointer may be NULL). */
SAMFAST_API samfast_status samfast_get_slice(const samfast_model* model, int* height, int* width,
                                             double* spacing_y, double* spacing_x);

/* Decode one prompt set against the current slice; fills out (see samfast_output). Both structs
   need struct_size (SAMFAST_PROMPT_INIT, SAMFAST_OUTPUT_INIT). */
SAMFAST_API samfast_status samfast_predict(samfast_model* model, const samfast_prompt* prompt,
                                           samfast_output* out);

/*
 * VOLUME FROM ONE 3D BOX (samfast_segment_volume): the rule of the Python API's 3D mode
 * (samfast.clinical.segment.segment_volume with a 3D box, "3d" mode; the rule is
 * samfast.clinical.propagate.PropagationRule, named SAMFAST_VOLUME_RULE), on the same model:
 *  - the box's middle slice z0 + (z1 - z0) / 2 is prompted with the box's footprint x0 y0 x1 y1;
 *  - the walk then goes down to z0 and up to z1, one slice at a time. Each slice's box is
 *    momentum * the previous slice's box + (1 - momentum) * (the previous mask's bounding box +
 *    margin_mm on every side, per axis in pixels from spacing_x / spacing_y, at least 1 pixel),
 *    clipped to the footprint shrunk toward z0 and z1 by shape_prior (1: the section of the
 *    ellipsoid inscribed in the box; 0: the whole footprint). After an empty mask the next slice
 *    gets the previous box again. Every mask is clipped to the footprint; no slice outside z0..z1
 *    is segmented.
 *  - A box on one slice (z0 == z1 after rounding) walks through the volume instead, and each
 *    direction stops (dropping that slice's mask) at the first mask with fewer than min_pixels
 *    pixels, with less than min_overlap of it on the previous mask, or with a predicted IoU below
 *    max(min_score, min_score_ratio * the start slice's predicted IoU).
 * Each slice is encoded as samfast_set_slice encodes it (one channel, its spacing) and decoded as
 * samfast_predict decodes a box (one mask, token 0). The handle's current slice afterwards is the
 * last slice walked, and its slice cache holds the last slices walked (the host's earlier slices
 * may have been evicted).
 */

/* Name of the rule samfast_segment_volume runs (PropagationRule.name on the Python side). */
#define SAMFAST_VOLUME_RULE "samfast-walk-2"

/* The walk's constants. Fill with samfast_volume_options_init (the defaults; a zero field is a
   real value here: momentum 0 is the mask's box alone), then change what you need. */
typedef struct samfast_volume_options {
  size_t struct_size;     /* set by samfast_volume_options_init */
  double margin_mm;       /* >= 0; default 5 */
  double momentum;        /* 0..1, share of the previous box kept; default 0.7 */
  double shape_prior;     /* 0..1; default 1 */
  int min_pixels;         /* >= 1; one-slice box only (stop rule); default 10 */
  double min_overlap;     /* 0..1; one-slice box only; default 0.5 */
  double min_score_ratio; /* >= 0; one-slice box only; default 0.8 */
  double min_score;       /* one-slice box only; default 0.6 */
} samfast_volume_options;

/* Fill options with the default rule (SAMFAST_VOLUME_RULE's constants) and struct_size with
   struct_size, which the caller passes as sizeof(samfast_volume_options):
     samfast_volume_options options;
     samfast_volume_options_init(&options, sizeof options);
   NULL, or a struct_size refused as STRUCT SIZES says: SAMFAST_ERR_INVALID_ARGUMENT. */
SAMFAST_API samfast_status samfast_volume_options_init(samfast_volume_options* options, size_t struct_size);

/*
 * Segment a volume from one 3D box (see VOLUME FROM ONE 3D BOX).
 *  volume: depth * height * width floats, slice after slice, row-major: the model's input as the
 *          Python API gets it (already normalised, e.g. Putz for MRI: Volume.normalised()).
 *  spacing_z / spacing_y / spacing_x: mm per voxel (> 0); y and x set the margin in pixels.
 *  box3d: x0 y0 z0 x1 y1 z1 in voxel indices (x = column, y = row, z = slice), as `samfast segment
 *         --box`: voxel i covers [i - 0.5, i + 0.5], so each corner must lie in [-0.5, size - 0.5]
 *         (else SAMFAST_ERR_OUT_OF_RANGE); corners are then clipped to the voxel centres and z0 /
 *         z1 rounded to slices (half to even). x0 > x1, y0 > y1 or z0 > z1 (inverted) and a box
 *         empty in-plane (x0 == x1 or y0 == y1 after clipping) are SAMFAST_ERR_INVALID_ARGUMENT.
 *  options: NULL for the defaults, else filled by samfast_volume_options_init (struct_size set).
 *  out_mask: depth * height * width bytes, written: 1 inside, 0 outside.
 *  out_scores: depth floats, or NULL: each segmented slice's predicted IoU, NaN elsewhere.
 *  out_boxes: 4 * depth floats, or NULL: the box x0 y0 x1 y1 each segmented slice was prompted
 *             with, NaN elsewhere.
 * Every argument, and every voxel (NaN or infinity: SAMFAST_ERR_INVALID_ARGUMENT), is checked
 * before the first slice is encoded. On failure out_mask is all zero and out_scores / out_boxes
 * all NaN (once the sizes are valid); an empty result is a success (the host decides).
 * MEMORY BOUND beyond the caller's buffers: the handle's slice cache as samfast_set_slice keeps it
 * (at most cache_slices * slice_bytes, samfast_info) and, while a slice is walked, the transient
 * buffers of one samfast_set_slice + samfast_predict (under 8 * input_size^2 + height * width
 * floats, besides the backend's own, as for any slice). The masks are built in out_mask itself
 * (the previous slice's mask is read back from it), so nothing grows with depth. Time: one
 * encoder and one prompt-side decoder run per slice walked (a 3D box: z1 - z0 + 1 slices; a
 * one-slice box: at most depth).
 */
SAMFAST_API samfast_status samfast_segment_volume(samfast_model* model, const float* volume, int depth,
                                                  int height, int width, double spacing_z, double spacing_y,
                                                  double spacing_x, const float box3d[6],
                                                  const samfast_volume_options* options, uint8_t* out_mask,
                                                  float* out_scores, float* out_boxes);

#ifdef __cplusplus
}
#endif

#endif /* SAMFAST_H */
