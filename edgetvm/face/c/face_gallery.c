/* Face gallery on the board: see face_gallery.h for the file format and the scoring rule; the twin is
 * edgetvm/face/gallery.py (keep the float32 operation order identical on both sides). */
#define _POSIX_C_SOURCE 200809L
#include "face_gallery.h"

#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#endif

static const char kMagic[8] = {'E', 'T', 'V', 'M', 'G', 'A', 'L', '\0'};
enum { kVersion = 1, kHeaderBytes = 64, kIdentityBytes = 64 };

uint32_t face_gallery_crc32(uint32_t crc, const void* data, size_t n) {
  static uint32_t table[256];
  static int ready = 0;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int b = 0; b < 8; ++b) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = 1;
  }
  const uint8_t* p = (const uint8_t*)data;
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

const char* face_gallery_strerror(int code) {
  switch (code) {
    case FACE_GALLERY_OK: return "ok";
    case FACE_GALLERY_EIO: return "cannot read or write the gallery file";
    case FACE_GALLERY_EFORMAT: return "not an edgetvm gallery file of version 1, or truncated";
    case FACE_GALLERY_ECRC: return "CRC-32 mismatch: the gallery file is damaged";
    case FACE_GALLERY_ENOMEM: return "out of memory";
    case FACE_GALLERY_EARG: return "bad argument (name of 1..55 bytes, embedding of the gallery's size, finite)";
    case FACE_GALLERY_ENOTFOUND: return "no such identity";
    default: return "unknown error";
  }
}

static uint32_t get_u32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static int reserve(face_gallery* g, uint32_t identities, uint32_t samples) {
  if (identities > g->identity_capacity) {
    uint32_t cap = identities > 2 * g->identity_capacity ? identities : 2 * g->identity_capacity;
    void* p = realloc(g->identities, (size_t)cap * sizeof(face_gallery_identity));
    if (!p) return FACE_GALLERY_ENOMEM;
    g->identities = (face_gallery_identity*)p;
    g->identity_capacity = cap;
  }
  if (samples > g->sample_capacity) {
    uint32_t cap = samples > 2 * g->sample_capacity ? samples : 2 * g->sample_capacity;
    void* s = realloc(g->scales, (size_t)cap * sizeof(float));
    if (!s) return FACE_GALLERY_ENOMEM;
    g->scales = (float*)s;
    void* c = realloc(g->codes, (size_t)cap * g->dim);
    if (!c) return FACE_GALLERY_ENOMEM;
    g->codes = (int8_t*)c;
    g->sample_capacity = cap;
  }
  return FACE_GALLERY_OK;
}

int face_gallery_init(face_gallery* g, int dim, float threshold, const char* recognizer) {
  memset(g, 0, sizeof *g);
  if (dim <= 0 || !recognizer || strlen(recognizer) > 28) return FACE_GALLERY_EARG;
  g->dim = (uint32_t)dim;
  g->threshold = threshold;
  strcpy(g->recognizer, recognizer);
  return FACE_GALLERY_OK;
}

void face_gallery_free(face_gallery* g) {
  free(g->identities);
  free(g->scales);
  free(g->codes);
  memset(g, 0, sizeof *g);
}

int face_gallery_load(face_gallery* g, const char* path) {
  memset(g, 0, sizeof *g);
  FILE* f = fopen(path, "rb");
  if (!f) return FACE_GALLERY_EIO;
  uint8_t* data = NULL;
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  int rc = size < kHeaderBytes ? FACE_GALLERY_EFORMAT : FACE_GALLERY_OK;
  if (rc == FACE_GALLERY_OK && (fseek(f, 0, SEEK_SET) != 0 || !(data = (uint8_t*)malloc((size_t)size))))
    rc = FACE_GALLERY_ENOMEM;
  if (rc == FACE_GALLERY_OK && fread(data, 1, (size_t)size, f) != (size_t)size) rc = FACE_GALLERY_EIO;
  fclose(f);
  uint32_t dim = 0, n_ids = 0, n_rows = 0;
  if (rc == FACE_GALLERY_OK) {
    dim = get_u32(data + 16), n_ids = get_u32(data + 20), n_rows = get_u32(data + 24);
    uint64_t expected = (uint64_t)kHeaderBytes + (uint64_t)n_ids * kIdentityBytes + (uint64_t)n_rows * 4 +
                        (uint64_t)n_rows * dim;
    if (memcmp(data, kMagic, 8) != 0 || get_u32(data + 8) != kVersion || get_u32(data + 12) != kHeaderBytes ||
        dim == 0 || expected != (uint64_t)size)
      rc = FACE_GALLERY_EFORMAT;
    else if (face_gallery_crc32(0, data + kHeaderBytes, (size_t)size - kHeaderBytes) != get_u32(data + 32))
      rc = FACE_GALLERY_ECRC;
  }
  if (rc == FACE_GALLERY_OK) {
    float threshold;
    memcpy(&threshold, data + 28, 4);
    char recognizer[29] = {0};
    memcpy(recognizer, data + 36, 28);
    rc = face_gallery_init(g, (int)dim, threshold, recognizer);
  }
  if (rc == FACE_GALLERY_OK) rc = reserve(g, n_ids, n_rows);
  if (rc == FACE_GALLERY_OK) {
    const uint8_t* p = data + kHeaderBytes;
    uint32_t next = 0;
    for (uint32_t i = 0; i < n_ids && rc == FACE_GALLERY_OK; ++i, p += kIdentityBytes) {
      face_gallery_identity* id = &g->identities[i];
      memcpy(id->name, p, FACE_GALLERY_NAME_BYTES);
      id->first = get_u32(p + 56);
      id->count = get_u32(p + 60);
      if (id->name[FACE_GALLERY_NAME_BYTES - 1] != '\0' || id->first != next || id->count == 0)
        rc = FACE_GALLERY_EFORMAT;
      next += id->count;
    }
    if (next != n_rows) rc = FACE_GALLERY_EFORMAT;
    if (n_rows > 0) {
      memcpy(g->scales, p, (size_t)n_rows * 4);
      memcpy(g->codes, p + (size_t)n_rows * 4, (size_t)n_rows * dim);
    }
    g->n_identities = n_ids;
    g->n_samples = n_rows;
  }
  free(data);
  if (rc != FACE_GALLERY_OK) face_gallery_free(g);
  return rc;
}

static int fsync_path(const char* path, int flags) {
  int fd = open(path, flags);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int face_gallery_save(const face_gallery* g, const char* path) {
  size_t body = (size_t)g->n_identities * kIdentityBytes + (size_t)g->n_samples * (4 + g->dim);
  uint8_t* data = (uint8_t*)calloc(1, kHeaderBytes + body);
  size_t tmp_len = strlen(path) + 5;
  char* tmp = (char*)malloc(tmp_len);
  char* dir = strdup(path);
  int rc = data && tmp && dir ? FACE_GALLERY_OK : FACE_GALLERY_ENOMEM;
  if (rc == FACE_GALLERY_OK) {
    uint8_t* p = data + kHeaderBytes;
    for (uint32_t i = 0; i < g->n_identities; ++i, p += kIdentityBytes) {
      memcpy(p, g->identities[i].name, FACE_GALLERY_NAME_BYTES);
      put_u32(p + 56, g->identities[i].first);
      put_u32(p + 60, g->identities[i].count);
    }
    memcpy(p, g->scales, (size_t)g->n_samples * 4);
    memcpy(p + (size_t)g->n_samples * 4, g->codes, (size_t)g->n_samples * g->dim);
    memcpy(data, kMagic, 8);
    put_u32(data + 8, kVersion);
    put_u32(data + 12, kHeaderBytes);
    put_u32(data + 16, g->dim);
    put_u32(data + 20, g->n_identities);
    put_u32(data + 24, g->n_samples);
    memcpy(data + 28, &g->threshold, 4);
    put_u32(data + 32, face_gallery_crc32(0, data + kHeaderBytes, body));
    memcpy(data + 36, g->recognizer, strlen(g->recognizer));
    snprintf(tmp, tmp_len, "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    if (!f) {
      rc = FACE_GALLERY_EIO;
    } else {
      int bad = fwrite(data, 1, kHeaderBytes + body, f) != kHeaderBytes + body;
      bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
      bad |= fclose(f) != 0;
      if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        rc = FACE_GALLERY_EIO;
      } else if (fsync_path(dirname(dir), O_RDONLY) != 0) {
        rc = FACE_GALLERY_EIO;
      }
    }
  }
  free(data);
  free(tmp);
  free(dir);
  return rc;
}

int face_gallery_quantize(const float* embedding, int dim, int8_t* codes, float* scale) {
  float maxabs = 0.0f;
  for (int i = 0; i < dim; ++i) {
    float a = fabsf(embedding[i]);
    if (!(a <= 3.4e38f)) return FACE_GALLERY_EARG; /* NaN or infinity */
    if (a > maxabs) maxabs = a;
  }
  if (maxabs == 0.0f) return FACE_GALLERY_EARG;
  float s = maxabs / 127.0f;
  for (int i = 0; i < dim; ++i) codes[i] = (int8_t)rintf(embedding[i] / s);
  *scale = s;
  return FACE_GALLERY_OK;
}

static int find(const face_gallery* g, const char* name) {
  for (uint32_t i = 0; i < g->n_identities; ++i)
    if (strcmp(g->identities[i].name, name) == 0) return (int)i;
  return -1;
}

int face_gallery_enroll(face_gallery* g, const char* name, const float* embedding) {
  size_t len = name ? strlen(name) : 0;
  if (len == 0 || len >= FACE_GALLERY_NAME_BYTES) return FACE_GALLERY_EARG;
  int8_t* code = (int8_t*)malloc(g->dim);
  float scale;
  int rc = code ? face_gallery_quantize(embedding, (int)g->dim, code, &scale) : FACE_GALLERY_ENOMEM;
  int i = find(g, name);
  if (rc == FACE_GALLERY_OK) rc = reserve(g, g->n_identities + (i < 0), g->n_samples + 1);
  if (rc == FACE_GALLERY_OK) {
    uint32_t at = g->n_samples;
    if (i < 0) {
      face_gallery_identity* id = &g->identities[g->n_identities++];
      memset(id->name, 0, sizeof id->name);
      memcpy(id->name, name, len);
      id->first = at;
      id->count = 1;
    } else {
      /* Samples stay grouped by identity: make room at the end of this one's. */
      at = g->identities[i].first + g->identities[i].count;
      memmove(g->scales + at + 1, g->scales + at, (size_t)(g->n_samples - at) * sizeof(float));
      memmove(g->codes + (size_t)(at + 1) * g->dim, g->codes + (size_t)at * g->dim,
              (size_t)(g->n_samples - at) * g->dim);
      g->identities[i].count++;
      for (uint32_t j = (uint32_t)i + 1; j < g->n_identities; ++j) g->identities[j].first++;
    }
    g->scales[at] = scale;
    memcpy(g->codes + (size_t)at * g->dim, code, g->dim);
    g->n_samples++;
  }
  free(code);
  return rc;
}

int face_gallery_remove(face_gallery* g, const char* name) {
  int i = find(g, name);
  if (i < 0) return FACE_GALLERY_ENOTFOUND;
  uint32_t first = g->identities[i].first, count = g->identities[i].count, end = first + count;
  memmove(g->scales + first, g->scales + end, (size_t)(g->n_samples - end) * sizeof(float));
  memmove(g->codes + (size_t)first * g->dim, g->codes + (size_t)end * g->dim, (size_t)(g->n_samples - end) * g->dim);
  memmove(g->identities + i, g->identities + i + 1, (size_t)(g->n_identities - i - 1) * sizeof(face_gallery_identity));
  g->n_identities--;
  g->n_samples -= count;
  for (uint32_t j = (uint32_t)i; j < g->n_identities; ++j) g->identities[j].first -= count;
  return FACE_GALLERY_OK;
}

/* sum_i a_i b_i of two int8 vectors, exact in int32.
 *
 * NEON, per 16 codes: two VLD1 with post-increment (query and sample), two VMULL.S8 (8 int16
 * products each: |128 * 128| fits) and two VPADAL.S16 (pairwise add into four int32 lanes), a
 * compare and a branch: 8 instructions per 16 multiply-accumulates, 64 for SFace's 128-d codes.
 * Measured under qemu (benchmarks/bench_gallery.py): 129 instructions per identity in all, the rest
 * being the horizontal sum, the float scoring and the top-k test. An indexed loop (a[i], b[i]) was
 * 13 instructions per 16 (GCC recomputed both addresses) and 161 per identity.
 * Elsewhere (the host build the tests bind) the scalar loop.
 */
static int32_t dot_s8(const int8_t* a, const int8_t* b, uint32_t n) {
  int32_t sum = 0;
#if defined(__ARM_NEON) || defined(__ARM_NEON__)
  const int8_t* end = a + (n & ~15u);
  int32x4_t acc = vdupq_n_s32(0);
  while (a < end) {
    int8x16_t va = vld1q_s8(a), vb = vld1q_s8(b);
    a += 16;
    b += 16;
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(va), vget_low_s8(vb)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(va), vget_high_s8(vb)));
  }
  int64x2_t pairs = vpaddlq_s32(acc);
  sum = (int32_t)vget_lane_s64(vadd_s64(vget_low_s64(pairs), vget_high_s64(pairs)), 0);
  n &= 15u;
#endif
  for (uint32_t i = 0; i < n; ++i) sum += (int32_t)a[i] * (int32_t)b[i];
  return sum;
}

int face_gallery_search(const face_gallery* g, const float* embedding, face_match* out, int k) {
  if (k <= 0) return 0;
  int8_t* query = (int8_t*)malloc(g->dim);
  float qscale;
  int rc = query ? face_gallery_quantize(embedding, (int)g->dim, query, &qscale) : FACE_GALLERY_ENOMEM;
  if (rc != FACE_GALLERY_OK) {
    free(query);
    return rc;
  }
  int n = 0;
  for (uint32_t i = 0; i < g->n_identities; ++i) {
    const face_gallery_identity* id = &g->identities[i];
    float best = -INFINITY;
    for (uint32_t r = id->first; r < id->first + id->count; ++r) {
      float score = (float)dot_s8(query, g->codes + (size_t)r * g->dim, g->dim) * qscale * g->scales[r];
      if (score > best) best = score;
    }
    /* Insert into the sorted top k; an equal score does not pass an earlier identity. */
    if (n == k && !(best > out[k - 1].score)) continue;
    int at = n < k ? n++ : k - 1;
    while (at > 0 && best > out[at - 1].score) {
      out[at] = out[at - 1];
      --at;
    }
    out[at].identity = (int)i;
    out[at].score = best;
  }
  free(query);
  return n;
}
