/* The edgetvm standalone runtime: runs a generated edgetvm_model table without TVM.
 *
 * TVM's compiled host kernels import only these hooks from a runtime:
 *   - error reporting:  TVMFFIErrorSetRaisedFromCStr / ...FromCStrParts (the message of a failed check),
 *   - workspace memory: TVMBackendAllocWorkspace / TVMBackendFreeWorkspace, reached through the
 *                       function pointers __TVMBackendAllocWorkspace / __TVMBackendFreeWorkspace,
 *   - parallel loops:   TVMBackendParallelLaunch / TVMBackendParallelBarrier (same, via pointers).
 * Everything else a TVM runtime does (shape checks, memory planning, graph order) was decided at
 * compile time and lives in the model table.
 *
 * Threads: each context owns its arena, its workspace blocks and its worker threads, so two
 * contexts run at once in two threads. The hooks find their context through a thread-local
 * pointer set while a context runs. A context itself runs in one thread at a time.
 */
#define _GNU_SOURCE
#include "edgetvm_runtime.h"
#include "edgetvm_huffman.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

/* ------------------------------------------------------------------ TVM backend ABI (c_backend_api.h) */

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

EDGETVM_HIDDEN void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                                              int dtype_bits_hint);
EDGETVM_HIDDEN int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr);
EDGETVM_HIDDEN int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task);
EDGETVM_HIDDEN int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv);
/* TVMFFIErrorSetRaisedFromCStr(Parts) are declared by tvm/ffi/c_api.h with default visibility; the
 * library's version script keeps them (like every hook here) out of its dynamic symbol table. */

/* TVM's LLVM code generator calls the workspace and parallel hooks through these pointers (weak
 * zero-initialised definitions in the kernel object), which a TVM runtime fills at load time.
 * These strong definitions win at link time, so the kernels call straight into this file. */
EDGETVM_HIDDEN void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = TVMBackendAllocWorkspace;
EDGETVM_HIDDEN int (*__TVMBackendFreeWorkspace)(int, int, void*) = TVMBackendFreeWorkspace;
EDGETVM_HIDDEN int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void*, int) = TVMBackendParallelLaunch;
EDGETVM_HIDDEN int (*__TVMBackendParallelBarrier)(int, TVMParallelGroupEnv*) = TVMBackendParallelBarrier;

/* ------------------------------------------------------------------ context */

#define ERROR_CAPACITY 1024
#define WORKSPACE_BLOCKS 16
#define MAX_THREADS 64
/* Polls of a spinning worker before it sleeps: kernels of one inference follow each other within
 * microseconds, so workers stay awake across them and sleep between inferences. */
#define SPIN_POLLS (1 << 14)

typedef struct {
  void* ptr;
  size_t size;
  int in_use;
} workspace_block;

/* Workspace blocks of one thread of a context: TVM allocates and frees them LIFO in every
 * kernel call, so a few cached blocks make the allocation free after the first inference. */
typedef struct {
  workspace_block blocks[WORKSPACE_BLOCKS];
} workspace_slot;

typedef struct thread_pool thread_pool;

struct edgetvm_ctx {
  const edgetvm_model* model;
  uint8_t* arena;
  uint8_t* weights; /* the widened weights (model->segments), else NULL: model->weights in place */
  int num_threads;
  atomic_flag busy;
  thread_pool* pool;
  workspace_slot* workspace; /* one slot per thread: 0 is the calling thread, i the i-th worker */
  DLTensor* tensors;
  TVMFFIAny* packed_args;
  char error[ERROR_CAPACITY];
};

static __thread edgetvm_ctx* tls_ctx;
static __thread int tls_slot;
static __thread int tls_in_parallel;
static __thread char tls_error[ERROR_CAPACITY];
static __thread char tls_create_error[ERROR_CAPACITY];

static void set_error(edgetvm_ctx* ctx, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(edgetvm_ctx* ctx, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------------ error hooks */

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  snprintf(tls_error, sizeof tls_error, "%s: %s", kind ? kind : "Error", message ? message : "");
}

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** message_parts, int32_t num_parts) {
  size_t used = (size_t)snprintf(tls_error, sizeof tls_error, "%s: ", kind ? kind : "Error");
  for (int32_t i = 0; i < num_parts && used < sizeof tls_error - 1; ++i) {
    if (message_parts[i] == NULL) continue;
    used += (size_t)snprintf(tls_error + used, sizeof tls_error - used, "%s", message_parts[i]);
  }
}

/* ------------------------------------------------------------------ workspace hooks */

static void* aligned_malloc(size_t nbytes) {
  void* ptr = NULL;
  if (posix_memalign(&ptr, EDGETVM_ALIGNMENT, nbytes ? nbytes : 1) != 0) return NULL;
  return ptr;
}

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  if (tls_ctx == NULL) return aligned_malloc((size_t)nbytes);
  workspace_slot* slot = &tls_ctx->workspace[tls_slot];
  workspace_block* best = NULL;
  workspace_block* empty = NULL;
  workspace_block* small = NULL;
  for (int i = 0; i < WORKSPACE_BLOCKS; ++i) {
    workspace_block* b = &slot->blocks[i];
    if (b->in_use) continue;
    if (b->ptr == NULL) {
      if (empty == NULL) empty = b;
    } else if (b->size >= nbytes) {
      if (best == NULL || b->size < best->size) best = b;
    } else if (small == NULL) {
      small = b;
    }
  }
  if (best == NULL) {
    best = empty ? empty : small;
    if (best == NULL) return aligned_malloc((size_t)nbytes); /* more than WORKSPACE_BLOCKS live */
    free(best->ptr);
    best->ptr = aligned_malloc((size_t)nbytes);
    best->size = best->ptr ? (size_t)nbytes : 0;
    if (best->ptr == NULL) return NULL;
  }
  best->in_use = 1;
  return best->ptr;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  if (tls_ctx != NULL) {
    workspace_slot* slot = &tls_ctx->workspace[tls_slot];
    for (int i = 0; i < WORKSPACE_BLOCKS; ++i) {
      if (slot->blocks[i].ptr == ptr && slot->blocks[i].in_use) {
        slot->blocks[i].in_use = 0;
        return 0;
      }
    }
  }
  free(ptr);
  return 0;
}

/* ------------------------------------------------------------------ parallel hooks
 *
 * A TVM parallel loop is a lambda over task ids 0 .. num_task-1; each task computes its share of
 * the loop from penv->num_task. Any thread may run any task, so tasks are claimed, not assigned:
 * the launching thread and the woken workers take task ids from one counter until none is left.
 * On a loaded machine (or a board running other programs) a worker that is not scheduled then
 * costs nothing: the others take its tasks instead of waiting for it.
 *
 * The counter word holds the job's generation (high 16 bits) next to the next task id (low 16
 * bits), so a compare-and-swap only claims a task of the job it read. */

struct thread_pool {
  edgetvm_ctx* owner;
  int num_workers; /* threads besides the launching one */
  pthread_t* threads;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_uint generation; /* bumped per launch; sleeping workers wait for it to change */
  atomic_int stop;
  /* The job of the current generation; written before `claim` is published. */
  FTVMParallelLambda fn;
  void* cdata;
  TVMParallelGroupEnv env;
  atomic_int num_task; /* env.num_task, read by threads that may race with the next launch */
  atomic_uint claim;   /* generation << 16 | next task id */
  atomic_int done;   /* tasks finished */
  atomic_int failed;
  char error[ERROR_CAPACITY];
  /* TVMBackendParallelBarrier: a sense-reversing barrier over the tasks of the current job. */
  atomic_int barrier_arrived;
  atomic_uint barrier_phase;
};

typedef struct {
  thread_pool* pool;
  int id;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__arm__) || defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Claims and runs one task of the current job; 0 when none is left to claim. */
static int run_one_task(thread_pool* pool) {
  unsigned word = atomic_load_explicit(&pool->claim, memory_order_acquire);
  for (;;) {
    int task = (int)(word & 0xFFFFu);
    /* num_task may belong to a newer job here; then the compare-and-swap below fails. */
    if (task >= atomic_load_explicit(&pool->num_task, memory_order_acquire)) return 0;
    if (atomic_compare_exchange_weak_explicit(&pool->claim, &word, word + 1, memory_order_acq_rel,
                                              memory_order_acquire)) {
      break;
    }
  }
  /* The job cannot end while this task is unfinished, so its fields are stable now. */
  int task = (int)(word & 0xFFFFu);
  int saved_in_parallel = tls_in_parallel;
  tls_in_parallel = 1;
  tls_error[0] = '\0';
  if (pool->fn(task, &pool->env, pool->cdata) != 0) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&pool->failed, &expected, 1)) {
      snprintf(pool->error, sizeof pool->error, "%s", tls_error[0] ? tls_error : "parallel task failed");
    }
  }
  tls_in_parallel = saved_in_parallel;
  atomic_fetch_add_explicit(&pool->done, 1, memory_order_acq_rel);
  return 1;
}

static void* worker_main(void* raw) {
  worker_arg arg = *(worker_arg*)raw;
  free(raw);
  thread_pool* pool = arg.pool;
  tls_ctx = pool->owner;
  tls_slot = arg.id;
  unsigned seen = atomic_load(&pool->generation);
  for (;;) {
    unsigned generation;
    int polls = 0;
    while ((generation = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
           !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
      if (++polls < SPIN_POLLS) {
        cpu_relax();
        continue;
      }
      pthread_mutex_lock(&pool->mutex);
      while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop)) {
        pthread_cond_wait(&pool->wake, &pool->mutex);
      }
      pthread_mutex_unlock(&pool->mutex);
    }
    if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
    seen = generation;
    while (run_one_task(pool)) {
    }
  }
  return NULL;
}

static void pool_destroy(thread_pool* pool, int started) {
  pthread_mutex_lock(&pool->mutex);
  atomic_store(&pool->stop, 1);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  for (int i = 0; i < started; ++i) pthread_join(pool->threads[i], NULL);
  pthread_mutex_destroy(&pool->mutex);
  pthread_cond_destroy(&pool->wake);
  free(pool->threads);
  free(pool);
}

static thread_pool* pool_create(edgetvm_ctx* owner, int num_workers) {
  thread_pool* pool = calloc(1, sizeof *pool);
  if (pool == NULL) return NULL;
  pool->owner = owner;
  pool->num_workers = num_workers;
  pool->env.sync_handle = pool;
  pool->threads = calloc((size_t)num_workers, sizeof(pthread_t));
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_cond_init(&pool->wake, NULL);
  if (pool->threads == NULL) {
    pool_destroy(pool, 0);
    return NULL;
  }
  for (int i = 0; i < num_workers; ++i) {
    worker_arg* arg = malloc(sizeof *arg);
    if (arg != NULL) {
      arg->pool = pool;
      arg->id = i + 1;
    }
    if (arg == NULL || pthread_create(&pool->threads[i], NULL, worker_main, arg) != 0) {
      free(arg);
      pool_destroy(pool, i);
      return NULL;
    }
  }
  return pool;
}

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  thread_pool* pool = tls_ctx ? tls_ctx->pool : NULL;
  int threads = pool ? pool->num_workers + 1 : 1;
  /* TVM's lambdas split their loop by penv->num_task, so any task count up to the threads works. */
  if (num_task <= 0 || num_task > threads) num_task = threads;
  if (pool == NULL || tls_in_parallel || num_task == 1) {
    TVMParallelGroupEnv env = {NULL, 1};
    return flambda(0, &env, cdata);
  }
  unsigned generation = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
  pool->fn = flambda;
  pool->cdata = cdata;
  pool->env.num_task = num_task;
  atomic_store_explicit(&pool->num_task, num_task, memory_order_relaxed);
  atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->failed, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->barrier_arrived, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->claim, (generation & 0xFFFFu) << 16, memory_order_release);
  pthread_mutex_lock(&pool->mutex);
  atomic_store_explicit(&pool->generation, generation, memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);

  while (run_one_task(pool)) {
  }
  /* Every task is claimed; wait for the ones other threads are still running. */
  for (int polls = 0; atomic_load_explicit(&pool->done, memory_order_acquire) != num_task; ++polls) {
    if (polls < SPIN_POLLS) {
      cpu_relax();
    } else {
      sched_yield();
    }
  }
  if (atomic_load(&pool->failed)) {
    snprintf(tls_error, sizeof tls_error, "%s", pool->error);
    return -1;
  }
  return 0;
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  thread_pool* pool = (thread_pool*)penv->sync_handle;
  if (pool == NULL || penv->num_task <= 1) return 0;
  unsigned phase = atomic_load_explicit(&pool->barrier_phase, memory_order_acquire);
  if (atomic_fetch_add_explicit(&pool->barrier_arrived, 1, memory_order_acq_rel) + 1 == penv->num_task) {
    atomic_store_explicit(&pool->barrier_arrived, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->barrier_phase, 1, memory_order_release);
    return 0;
  }
  /* Tasks not yet claimed must reach the barrier too: run them here (they nest on this stack)
   * rather than wait for a thread that may never come. */
  while (atomic_load_explicit(&pool->barrier_phase, memory_order_acquire) == phase) {
    if (!run_one_task(pool)) cpu_relax();
  }
  return 0;
}

/* ------------------------------------------------------------------ contexts */

/* ------------------------------------------------------------------ float16 weights */

/* IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads). */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    float magnitude = (float)mantissa * 0x1p-24f; /* subnormal: mantissa * 2^-24, exact in binary32 */
    return sign ? -magnitude : magnitude;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static void widen_f16(float* dst, const uint8_t* src, size_t count) {
  size_t i = 0;
#if defined(__ARM_NEON) && defined(__ARM_FP) && (__ARM_FP & 2)
  /* VFPv4 / NEON-FP16: vcvt.f32.f16 widens four halves per instruction. */
  /* Inline assembly: GCC's vcvt_f32_f16 intrinsic also needs -mfp16-format=ieee. */
  for (; i + 4 <= count; i += 4) {
    uint16x4_t h = vld1_u16((const uint16_t*)(const void*)(src + 2 * i));
    float32x4_t wide;
    __asm__("vcvt.f32.f16 %q0, %P1" : "=w"(wide) : "w"(h));
    vst1q_f32(dst + i, wide);
  }
#endif
  for (; i < count; ++i) {
    uint16_t h;
    memcpy(&h, src + 2 * i, sizeof h);
    dst[i] = half_to_float(h);
  }
}

/* The weights the kernels read, rebuilt from the stored segments; NULL (and tls_create_error) when
 * out of memory or when a coded segment does not decode. */
static uint8_t* widen_weights(const edgetvm_model* m) {
  uint8_t* out = aligned_malloc((size_t)m->weights_bytes);
  if (out == NULL) {
    snprintf(tls_create_error, sizeof tls_create_error, "out of memory for %llu bytes of weights",
             (unsigned long long)m->weights_bytes);
    return NULL;
  }
  for (int32_t s = 0; s < m->num_segments; ++s) {
    const edgetvm_weight_segment* seg = &m->segments[s];
    if (seg->kind == EDGETVM_SEGMENT_F16) {
      widen_f16((float*)(void*)(out + seg->offset), m->weights + seg->stored_offset, (size_t)seg->count);
    } else if (seg->kind == EDGETVM_SEGMENT_HUFFMAN) {
      char why[ERROR_CAPACITY / 2];
      if (edgetvm_huffman_decode(m->weights + seg->stored_offset, (size_t)seg->stored_bytes, out + seg->offset,
                                 (size_t)seg->count, why, sizeof why) != 0) {
        snprintf(tls_create_error, sizeof tls_create_error, "weight segment %d of %s: %s; the artifact is corrupt, "
                 "export it again", (int)s, m->prefix, why);
        free(out);
        return NULL;
      }
    } else {
      memcpy(out + seg->offset, m->weights + seg->stored_offset, (size_t)seg->count);
    }
  }
  return out;
}

static int default_threads(const edgetvm_model* model) {
  const char* env = getenv("EDGETVM_NUM_THREADS");
  if (env != NULL && atoi(env) > 0) return atoi(env);
  if (model->default_threads > 0) return model->default_threads;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 0 ? (int)cpus : 1;
}

edgetvm_ctx* edgetvm_rt_create(const edgetvm_model* model, int num_threads) {
  if (num_threads <= 0) num_threads = default_threads(model);
  if (num_threads > MAX_THREADS) num_threads = MAX_THREADS;
  snprintf(tls_create_error, sizeof tls_create_error, "out of memory");
  edgetvm_ctx* ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) return NULL;
  ctx->model = model;
  ctx->num_threads = num_threads;
  atomic_flag_clear(&ctx->busy);
  size_t arena = (size_t)model->arena_bytes;
  ctx->arena = aligned_malloc(arena);
  ctx->workspace = calloc((size_t)num_threads, sizeof(workspace_slot));
  int max_args = model->max_args > 0 ? model->max_args : 1;
  ctx->tensors = calloc((size_t)max_args, sizeof(DLTensor));
  ctx->packed_args = calloc((size_t)max_args, sizeof(TVMFFIAny));
  if (model->num_segments > 0 && (ctx->weights = widen_weights(model)) == NULL) {
    edgetvm_rt_destroy(ctx);
    return NULL;
  }
  snprintf(tls_create_error, sizeof tls_create_error, "out of memory");
  if (ctx->arena == NULL || ctx->workspace == NULL || ctx->tensors == NULL || ctx->packed_args == NULL) {
    edgetvm_rt_destroy(ctx);
    return NULL;
  }
  if (num_threads > 1) {
    ctx->pool = pool_create(ctx, num_threads - 1);
    if (ctx->pool == NULL) {
      edgetvm_rt_destroy(ctx);
      return NULL;
    }
  }
  tls_create_error[0] = '\0';
  return ctx;
}

void edgetvm_rt_destroy(edgetvm_ctx* ctx) {
  if (ctx == NULL) return;
  if (ctx->pool != NULL) pool_destroy(ctx->pool, ctx->pool->num_workers);
  if (ctx->workspace != NULL) {
    for (int t = 0; t < ctx->num_threads; ++t) {
      for (int i = 0; i < WORKSPACE_BLOCKS; ++i) free(ctx->workspace[t].blocks[i].ptr);
    }
  }
  free(ctx->workspace);
  free(ctx->tensors);
  free(ctx->packed_args);
  free(ctx->arena);
  free(ctx->weights);
  free(ctx);
}

const char* edgetvm_rt_last_error(const edgetvm_ctx* ctx) {
  if (ctx == NULL) return "the context is NULL (create it with <model>_create; NULL there means out of memory)";
  return ctx->error;
}

const char* edgetvm_rt_create_error(void) { return tls_create_error; }

int edgetvm_rt_num_threads(const edgetvm_ctx* ctx) { return ctx ? ctx->num_threads : 0; }

static int check_buffers(edgetvm_ctx* ctx, const char* what, int count, const edgetvm_io* specs,
                         const void* const* buffers, const size_t* sizes) {
  if (buffers == NULL) {
    set_error(ctx, "the %s array is NULL; pass an array of %d buffer pointer(s)", what, count);
    return EDGETVM_ERR_ARGUMENT;
  }
  for (int i = 0; i < count; ++i) {
    if (buffers[i] == NULL) {
      set_error(ctx, "%s %d (%s) is NULL; it needs a buffer of %llu bytes", what, i, specs[i].name,
                (unsigned long long)specs[i].nbytes);
      return EDGETVM_ERR_ARGUMENT;
    }
    if (sizes != NULL && sizes[i] < specs[i].nbytes) {
      set_error(ctx, "%s %d (%s) has a buffer of %llu bytes, but the tensor needs %llu bytes", what, i,
                specs[i].name, (unsigned long long)sizes[i], (unsigned long long)specs[i].nbytes);
      return EDGETVM_ERR_BUFFER_SIZE;
    }
  }
  return EDGETVM_OK;
}

static int run_locked(edgetvm_ctx* ctx, const void* const* inputs, const size_t* input_bytes, void* const* outputs,
                      const size_t* output_bytes) {
  const edgetvm_model* m = ctx->model;
  const uint8_t* weights = ctx->weights != NULL ? ctx->weights : m->weights;
  int status = check_buffers(ctx, "input", m->num_inputs, m->inputs, inputs, input_bytes);
  if (status == EDGETVM_OK) {
    status = check_buffers(ctx, "output", m->num_outputs, m->outputs, (const void* const*)outputs, output_bytes);
  }
  if (status != EDGETVM_OK) return status;

  /* Input data the kernels read in place, unless misaligned: then a staging copy in the arena. */
  const uint8_t* input_data[m->num_inputs > 0 ? m->num_inputs : 1];
  for (int i = 0; i < m->num_inputs; ++i) {
    if (((uintptr_t)inputs[i] % EDGETVM_ALIGNMENT) == 0) {
      input_data[i] = (const uint8_t*)inputs[i];
    } else {
      memcpy(ctx->arena + m->input_staging[i], inputs[i], (size_t)m->inputs[i].nbytes);
      input_data[i] = ctx->arena + m->input_staging[i];
    }
  }

  for (int c = 0; c < m->num_calls; ++c) {
    const edgetvm_call* call = &m->calls[c];
    for (uint32_t a = 0; a < call->num_args; ++a) {
      const edgetvm_tensor_ref* ref = &m->args[call->first_arg + a];
      DLTensor* t = &ctx->tensors[a];
      const uint8_t* data;
      if (ref->base == EDGETVM_BASE_INPUT) {
        data = input_data[ref->offset];
      } else if (ref->base == EDGETVM_BASE_ARENA) {
        data = ctx->arena + ref->offset;
      } else {
        data = weights + ref->offset;
      }
      t->data = (void*)data;
      t->device.device_type = kDLCPU;
      t->device.device_id = 0;
      t->ndim = ref->ndim;
      t->dtype.code = ref->dtype_code;
      t->dtype.bits = ref->dtype_bits;
      t->dtype.lanes = ref->dtype_lanes;
      t->shape = (int64_t*)&m->shapes[ref->shape_index];
      t->strides = NULL;
      t->byte_offset = 0;
      TVMFFIAny* any = &ctx->packed_args[a];
      any->type_index = kTVMFFIDLTensorPtr;
      any->zero_padding = 0;
      any->v_ptr = t;
    }
    TVMFFIAny result;
    memset(&result, 0, sizeof result);
    tls_error[0] = '\0';
    if (call->fn(NULL, ctx->packed_args, (int32_t)call->num_args, &result) != 0) {
      set_error(ctx, "kernel %d (%s) failed: %s", c, call->name, tls_error[0] ? tls_error : "no message");
      return EDGETVM_ERR_KERNEL;
    }
  }

  for (int o = 0; o < m->num_outputs; ++o) {
    const edgetvm_tensor_ref* ref = &m->output_src[o];
    const uint8_t* src = ref->base == EDGETVM_BASE_INPUT   ? input_data[ref->offset]
                         : ref->base == EDGETVM_BASE_ARENA ? ctx->arena + ref->offset
                                                           : weights + ref->offset;
    memmove(outputs[o], src, (size_t)m->outputs[o].nbytes);
  }
  return EDGETVM_OK;
}

int edgetvm_rt_run(edgetvm_ctx* ctx, const void* const* inputs, const size_t* input_bytes, void* const* outputs,
                   const size_t* output_bytes, int sizes_required) {
  if (ctx == NULL) return EDGETVM_ERR_ARGUMENT;
  if (sizes_required && (input_bytes == NULL || output_bytes == NULL)) {
    set_error(ctx, "run_checked needs the input_bytes and output_bytes arrays (use run to skip the size checks)");
    return EDGETVM_ERR_ARGUMENT;
  }
  if (atomic_flag_test_and_set(&ctx->busy)) {
    set_error(ctx, "the context is already running in another thread; create one context per thread");
    return EDGETVM_ERR_ARGUMENT;
  }
  ctx->error[0] = '\0';
  edgetvm_ctx* saved_ctx = tls_ctx;
  int saved_slot = tls_slot;
  tls_ctx = ctx;
  tls_slot = 0;
  int status = run_locked(ctx, inputs, input_bytes, outputs, output_bytes);
  tls_ctx = saved_ctx;
  tls_slot = saved_slot;
  atomic_flag_clear(&ctx->busy);
  return status;
}
