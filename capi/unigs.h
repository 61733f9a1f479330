/*
 * unigs.h: the C API of unigs-deploy (UniGS: unified image generation and segmentation).
 *
 * One header, one library (libunigs.so, built by `make capi`). Opaque handles, plain buffers,
 * error codes with a message; no Python type crosses the boundary (the library embeds the
 * lean Python runtime, which needs no torch).
 *
 * Images are RGB8, row-major, `stride` bytes between rows (>= 3 * width). Masks are uint8,
 * non-zero inside, `stride` bytes between rows (>= width). Label maps are int32, width * height,
 * 0 = background. Output buffers belong to the caller; unigs_required_size() says how large.
 *
 * Thread safety: every function may be called from any thread. Calls on one handle are
 * serialised by the library (one call at a time per handle; the embedded interpreter's lock
 * serialises the rest), so sharing a handle between threads is safe but not parallel: for
 * parallel work open one handle per thread. unigs_last_error() is per handle (and per thread
 * for the NULL handle) and stays valid until the next call on that handle.
 */
#ifndef UNIGS_H
#define UNIGS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0.3: unigs_params grew threshold, stop and tiny_vae at its end, so its size changed: rebuild
 * programs against this header (0.x makes no ABI promise; compare unigs_version() at start-up).
 * 0.5: unigs_params grew candidates, and keep_unmasked's 0 became "the model's default".
 * 0.6: unigs_params grew rerank at its end.
 * 0.7: unigs_params grew guidance_interval at its end. */
#define UNIGS_VERSION_MAJOR 0
#define UNIGS_VERSION_MINOR 7
#define UNIGS_VERSION_STRING "0.7.0"

typedef enum {
    UNIGS_OK = 0,
    UNIGS_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, zero size, bad stride, empty mask ... */
    UNIGS_ERR_BUFFER_TOO_SMALL = 2, /* see unigs_required_size() */
    UNIGS_ERR_ENGINE = 3,           /* missing or unusable engine, manifest or backend */
    UNIGS_ERR_INTERNAL = 4,         /* anything else; the message says what */
    UNIGS_ERR_CANCELLED = 5         /* the progress callback asked to stop */
} unigs_status;

typedef enum { UNIGS_LABELS = 0, UNIGS_RGB = 1, UNIGS_MASK = 2 } unigs_buffer_kind;

typedef struct unigs_s unigs_t; /* opaque */

typedef struct {
    int threads;          /* intra-op threads, 0 = all cores */
    const char *provider; /* "auto", "cpu" or "cuda"; NULL = "auto" */
    const char *backend;  /* "onnxruntime" or "openvino" for .onnx engines; NULL = "onnxruntime" */
} unigs_options;

/* Called after every denoising step with step = 1..total; return non-zero to cancel the call
 * (it then returns UNIGS_ERR_CANCELLED and writes no output). Runs on the calling thread. */
typedef int (*unigs_progress_fn)(int step, int total, void *user_data);

/* Fill with unigs_params_init(): every field then holds its default, whatever fields later
 * versions add. steps and guidance have no meaningful 0 (steps >= 1, guidance >= 1), so 0 there
 * means "the task's default" (the model's, from its manifest, else the runtime's) and a
 * zero-filled struct is the defaults too (threshold likewise: a split threshold is > 0). */
typedef struct {
    int steps;       /* denoising steps (>= 1); 0 = the task's default */
    float guidance;  /* classifier-free guidance (>= 1, 1 = off); 0 = the task's default */
    uint64_t seed;   /* same seed, same output */
    float eta;       /* DDIM eta, 0 = deterministic */
    int resolution;  /* 0 = the model's native resolution (outputs mapped back to the input's size),
                        -1 = the input's own size, N > 0 = the longer side scaled to N pixels */
    const char *scheduler; /* NULL = the task's default; "ddim", "euler" or "dpm++2m" */
    const char *spacing;   /* NULL = the task's default; "leading", "trailing" or "linspace" */
    unigs_progress_fn progress; /* NULL = none */
    void *user_data;            /* passed to progress */
    /* the dichotomy decoder's split rule, and which VAE decodes: NULL / 0 = the task's default */
    float threshold;      /* split threshold (> 0) */
    const char *stop;     /* "centres" or "spread" */
    const char *tiny_vae; /* "off", "colormap" (the tiny VAE decodes colormaps) or "all" */
    /* unigs_inpaint only (the other tasks ignore them) */
    const char *locate;   /* NULL = the model's default; "colormap" or "refer": where each region's entity is read */
    int keep_unmasked;    /* 1: image_out keeps the input's pixels outside the regions; -1: the model's own image
                             everywhere; 0: the model's default (0.4 read 0 as -1) */
    int candidates;       /* draws (seeds seed, seed + 1, ...), the one whose entities agree most with the others'
                             kept, or, where the model's defaults rerank (the demo model's do), the one its
                             reranker says matches the prompts best; 0 = the model's default; progress then
                             counts every draw's steps */
    int rerank;           /* how the candidates are chosen: 1 by the engine's reranker (how well each draw matches
                             its prompt), -1 by agreement alone (the most typical draw), 0 the model's default */
    /* every task: guide only the denoising steps whose timestep t has LOW <= t <= HIGH (e.g. {600, 1000}:
       the noisiest steps, where the caption steers the drawing); the others run the conditional pass alone,
       at half the UNet's cost. {0, 0} = the task's default (the model's, else every step); {0, 1000} = every step */
    float guidance_interval[2];
} unigs_params;

typedef struct {
    float threshold; /* 0 = default (32) */
    int min_area;    /* < 0 = default (32); 0 keeps every cluster */
    int max_depth;   /* 0 = default (32) */
    int keep_background;
} unigs_decode_params;

/* The library's version, e.g. "0.5.0" (UNIGS_VERSION_STRING of the header it was built with). */
const char *unigs_version(void);

/* Every field of *params set to its default. */
void unigs_params_init(unigs_params *params);

/* Bytes needed for an output buffer of `kind` for a width x height image. */
size_t unigs_required_size(unigs_buffer_kind kind, int width, int height);

/* Open an engine (engines/unigs.onnx, engines/unigs.plan or the folder). NULL on failure:
 * unigs_last_error(NULL) says why. Options may be NULL. */
unigs_t *unigs_open(const char *engine_path, const unigs_options *options);
void unigs_close(unigs_t *handle);

/* The message of the last failed call on `handle` (NULL: of the last failed unigs_open or
 * handle-less call on this thread); "" after a success. */
const char *unigs_last_error(const unigs_t *handle);

/* Every entity of the image (background clusters are entities too). params may be NULL. */
int unigs_segment(unigs_t *handle, const uint8_t *rgb, int width, int height, int stride,
                  const unigs_params *params, int32_t *labels_out, size_t labels_size, int *n_entities);

/* The mask of the entity described by `prompt` inside the coarse region `mask`. */
int unigs_refer(unigs_t *handle, const uint8_t *rgb, int width, int height, int stride,
                const uint8_t *mask, int mask_stride, const char *prompt, const unigs_params *params,
                uint8_t *mask_out, size_t mask_size);

/* Multi-region inpainting: n_regions masks (same size as the image) with one prompt each.
 * labels_out: the model's default `locate` decides (its manifest): refer gives label i to region i's
 * entity, colormap gives the generated colormap's entities. Any of the outputs may be NULL (with
 * size 0) when not wanted. */
int unigs_inpaint(unigs_t *handle, const uint8_t *rgb, int width, int height, int stride,
                  const uint8_t *const *masks, int mask_stride, const char *const *prompts, int n_regions,
                  const unigs_params *params, uint8_t *image_out, size_t image_size,
                  uint8_t *colormap_out, size_t colormap_size, int32_t *labels_out, size_t labels_size);

/* An image whose entities follow `colormap` (RGB8 in the location-aware palette). */
int unigs_synthesize(unigs_t *handle, const uint8_t *colormap, int width, int height, int stride,
                     const char *prompt, const unigs_params *params, uint8_t *image_out, size_t image_size);

/* The progressive dichotomy decoder alone: colormap -> label map. No model needed. params may be NULL. */
int unigs_decode_colormap(const uint8_t *colormap, int width, int height, int stride,
                          const unigs_decode_params *params, int32_t *labels_out, size_t labels_size,
                          int *n_entities);

#ifdef __cplusplus
}
#endif
#endif /* UNIGS_H */
