/* The edgetvm standalone runtime: what a TVM-compiled static-shape model needs to run without TVM.
 *
 * A model is a table (edgetvm_model, generated per model by edgetvm) of kernel calls over one
 * statically planned arena. Each argument of a call is a tensor at a fixed byte offset of one of
 * three bases: the caller's input buffers, the context's arena, or the constant weights blob.
 * The kernels are TVM host functions with the tvm-ffi packed calling convention; this runtime
 * gives them the few hooks they import (errors, workspace, parallel launch), see edgetvm_runtime.c.
 *
 * This header is internal to the generated library: users include the generated <model>.h only.
 */
#ifndef EDGETVM_RUNTIME_H_
#define EDGETVM_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#include <tvm/ffi/c_api.h>

#define EDGETVM_HIDDEN __attribute__((visibility("hidden")))
#define EDGETVM_EXPORT __attribute__((visibility("default")))

/* Status codes, also defined by every generated <model>.h. */
#define EDGETVM_OK 0
#define EDGETVM_ERR_ARGUMENT (-1)    /* null context, null buffer array or null buffer */
#define EDGETVM_ERR_BUFFER_SIZE (-2) /* a buffer is smaller than its tensor */
#define EDGETVM_ERR_KERNEL (-3)      /* a kernel reported an error (message in last_error) */
#define EDGETVM_ERR_NO_MEMORY (-4)   /* out of memory */

/* Bytes every tensor the kernels see is aligned to: TVM buffers assume 64-byte aligned data. */
#define EDGETVM_ALIGNMENT 64

typedef int32_t (*edgetvm_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

enum { EDGETVM_BASE_INPUT = 0, EDGETVM_BASE_ARENA = 1, EDGETVM_BASE_WEIGHTS = 2 };

/* One tensor: `offset` is a byte offset into the arena or the weights, or the input index. */
typedef struct {
  uint8_t base;
  uint8_t ndim;
  uint8_t dtype_code;
  uint8_t dtype_bits;
  uint16_t dtype_lanes;
  uint32_t shape_index; /* first dimension in edgetvm_model.shapes */
  uint64_t offset;
} edgetvm_tensor_ref;

typedef struct {
  edgetvm_kernel_fn fn;
  const char* name;
  uint32_t first_arg; /* first argument in edgetvm_model.args */
  uint32_t num_args;
} edgetvm_call;

typedef struct {
  const char* name;
  const char* dtype;
  int32_t ndim;
  const int64_t* shape;
  uint64_t nbytes;
} edgetvm_io;

/* A run of the stored weights the runtime writes into the weights the kernels read, once per
 * context at create time. Weights stored as float16 (compile with weights="fp16") are widened
 * here, as ncnn does at load: half the bytes on disk, full-speed float32 kernels. */
/* Weights stored as Huffman-coded indices into per-tensor or per-channel tables (Deep Compression,
 * compile with an entropy coder) are decoded here too (edgetvm_huffman.h). */
enum { EDGETVM_SEGMENT_COPY = 0, EDGETVM_SEGMENT_F16 = 1, EDGETVM_SEGMENT_HUFFMAN = 2 };
typedef struct {
  uint64_t stored_offset; /* byte offset in edgetvm_model.weights */
  uint64_t offset;        /* byte offset in the float32 weights the kernels read */
  uint64_t count;         /* bytes (COPY, HUFFMAN) or float16 elements (F16) written at `offset` */
  uint32_t kind;
  uint64_t stored_bytes;  /* bytes at `stored_offset` (the coded record of a HUFFMAN segment) */
} edgetvm_weight_segment;

typedef struct {
  const char* prefix;
  int32_t num_inputs;
  int32_t num_outputs;
  const edgetvm_io* inputs;
  const edgetvm_io* outputs;
  /* Arena byte offset of each input's staging copy, used when a caller's buffer is misaligned. */
  const uint64_t* input_staging;
  /* Where each output's bytes are when the last kernel has run (copied to the caller's buffer). */
  const edgetvm_tensor_ref* output_src;
  const int64_t* shapes;
  const edgetvm_tensor_ref* args;
  const edgetvm_call* calls;
  int32_t num_calls;
  int32_t max_args;
  uint64_t arena_bytes;
  const uint8_t* weights;
  int32_t default_threads; /* 0: the number of online CPUs */
  /* NULL: the kernels read `weights` in place. Else a context widens these into its own copy. */
  const edgetvm_weight_segment* segments;
  int32_t num_segments;
  uint64_t weights_bytes; /* size of that copy */
} edgetvm_model;

typedef struct edgetvm_ctx edgetvm_ctx;

EDGETVM_HIDDEN edgetvm_ctx* edgetvm_rt_create(const edgetvm_model* model, int num_threads);
EDGETVM_HIDDEN void edgetvm_rt_destroy(edgetvm_ctx* ctx);
EDGETVM_HIDDEN int edgetvm_rt_run(edgetvm_ctx* ctx, const void* const* inputs, const size_t* input_bytes,
                                  void* const* outputs, const size_t* output_bytes, int sizes_required);
EDGETVM_HIDDEN const char* edgetvm_rt_last_error(const edgetvm_ctx* ctx);
/* Why the last edgetvm_rt_create of this thread returned NULL ("" after a success). */
EDGETVM_HIDDEN const char* edgetvm_rt_create_error(void);
EDGETVM_HIDDEN int edgetvm_rt_num_threads(const edgetvm_ctx* ctx);

#endif /* EDGETVM_RUNTIME_H_ */
