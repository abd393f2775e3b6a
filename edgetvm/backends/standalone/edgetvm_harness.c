/* edgetvm_harness: runs any edgetvm standalone library on raw input files, REPEAT times.
 *
 *   edgetvm_harness LIB.so REPEAT THREADS in0.bin [in1.bin ...] out0.bin [out1.bin ...]
 *
 * Built once per architecture by edgetvm.emulate (for ARM it runs under qemu-arm). It finds the
 * model's API through edgetvm_model_prefix(), prints the interface on stdout, one line per tensor:
 *   input 0 data float32 4 1 3 112 112
 *   output 0 fc1 float32 2 1 128
 * then runs REPEAT inferences on one context (REPEAT 0 only prints the interface) and writes the
 * outputs of the last one. Counting guest instructions of REPEAT = 1 and 1 + N runs and taking the
 * difference over N gives the instructions of one inference without the start-up.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void* (*create_fn)(int);
typedef const char* (*create_error_fn)(void);
typedef void (*destroy_fn)(void*);
typedef int (*run_checked_fn)(void*, const void* const*, const size_t*, void* const*, const size_t*);
typedef const char* (*last_error_fn)(const void*);
typedef int (*count_fn)(void);
typedef const char* (*name_fn)(int);
typedef int (*ndim_fn)(int);
typedef const int64_t* (*shape_fn)(int);
typedef size_t (*bytes_fn)(int);

static void* lib;
static char prefix[256];

static void* sym(const char* suffix) {
  char name[512];
  snprintf(name, sizeof name, "%s_%s", prefix, suffix);
  void* p = dlsym(lib, name);
  if (p == NULL) {
    fprintf(stderr, "edgetvm_harness: the library lacks %s\n", name);
    exit(3);
  }
  return p;
}

static void* read_exact(const char* path, size_t want) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return NULL;
  }
  void* data = NULL;
  if (posix_memalign(&data, 64, want ? want : 1) != 0) data = NULL;
  size_t got = data ? fread(data, 1, want, f) : 0;
  int extra = fgetc(f) != EOF;
  fclose(f);
  if (data == NULL || got != want || extra) {
    fprintf(stderr, "edgetvm_harness: %s must hold exactly %zu bytes\n", path, want);
    free(data);
    return NULL;
  }
  return data;
}

static void describe(const char* kind, int count) {
  char key[64];
  snprintf(key, sizeof key, "%s_name", kind);
  name_fn name = (name_fn)sym(key);
  snprintf(key, sizeof key, "%s_dtype", kind);
  name_fn dtype = (name_fn)sym(key);
  snprintf(key, sizeof key, "%s_ndim", kind);
  ndim_fn ndim = (ndim_fn)sym(key);
  snprintf(key, sizeof key, "%s_shape", kind);
  shape_fn shape = (shape_fn)sym(key);
  for (int i = 0; i < count; ++i) {
    printf("%s %d %s %s %d", kind, i, name(i), dtype(i), ndim(i));
    for (int d = 0; d < ndim(i); ++d) printf(" %lld", (long long)shape(i)[d]);
    printf("\n");
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s LIB.so REPEAT THREADS inputs... outputs...\n", argv[0]);
    return 2;
  }
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "edgetvm_harness: %s\n", dlerror());
    return 3;
  }
  const char* (*prefix_fn)(void) = (const char* (*)(void))dlsym(lib, "edgetvm_model_prefix");
  if (prefix_fn == NULL) {
    fprintf(stderr, "edgetvm_harness: %s is not an edgetvm standalone library\n", argv[1]);
    return 3;
  }
  snprintf(prefix, sizeof prefix, "%s", prefix_fn());
  int repeat = atoi(argv[2]);
  int threads = atoi(argv[3]);
  int n_in = ((count_fn)sym("num_inputs"))();
  int n_out = ((count_fn)sym("num_outputs"))();
  describe("input", n_in);
  describe("output", n_out);
  fflush(stdout);
  if (repeat <= 0) return 0;
  if (argc != 4 + n_in + n_out) {
    fprintf(stderr, "edgetvm_harness: the model takes %d input file(s) and %d output file(s), got %d paths\n", n_in,
            n_out, argc - 4);
    return 2;
  }
  bytes_fn in_bytes_of = (bytes_fn)sym("input_bytes");
  bytes_fn out_bytes_of = (bytes_fn)sym("output_bytes");
  const void* inputs[n_in > 0 ? n_in : 1];
  void* outputs[n_out > 0 ? n_out : 1];
  size_t in_bytes[n_in > 0 ? n_in : 1], out_bytes[n_out > 0 ? n_out : 1];
  for (int i = 0; i < n_in; ++i) {
    in_bytes[i] = in_bytes_of(i);
    if ((inputs[i] = read_exact(argv[4 + i], in_bytes[i])) == NULL) return 1;
  }
  for (int i = 0; i < n_out; ++i) {
    out_bytes[i] = out_bytes_of(i);
    if (posix_memalign(&outputs[i], 64, out_bytes[i] ? out_bytes[i] : 1) != 0) return 1;
  }
  void* ctx = ((create_fn)sym("create_with_threads"))(threads);
  if (ctx == NULL) {
    fprintf(stderr, "edgetvm_harness: creating the context failed: %s\n", ((create_error_fn)sym("create_error"))());
    return 1;
  }
  run_checked_fn run = (run_checked_fn)sym("run_checked");
  for (int r = 0; r < repeat; ++r) {
    if (run(ctx, inputs, in_bytes, outputs, out_bytes) != 0) {
      fprintf(stderr, "edgetvm_harness: %s\n", ((last_error_fn)sym("last_error"))(ctx));
      return 1;
    }
  }
  for (int i = 0; i < n_out; ++i) {
    FILE* f = fopen(argv[4 + n_in + i], "wb");
    if (f == NULL || fwrite(outputs[i], 1, out_bytes[i], f) != out_bytes[i] || fclose(f) != 0) {
      perror(argv[4 + n_in + i]);
      return 1;
    }
  }
  ((destroy_fn)sym("destroy"))(ctx);
  return 0;
}
