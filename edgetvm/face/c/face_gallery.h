/* Face gallery for identification (1:N) on the board, in plain C99 (POSIX for the durable save).
 *
 * The gallery file is the one edgetvm.face.gallery (Python) reads and writes, little-endian:
 *
 *   offset  size         field
 *   0       8            magic "ETVMGAL\0"
 *   8       4  u32       format version (1)
 *   12      4  u32       header size (64)
 *   16      4  u32       embedding size D
 *   20      4  u32       identities N
 *   24      4  u32       samples R
 *   28      4  f32       decision threshold (cosine)
 *   32      4  u32       CRC-32 (zlib's, IEEE 802.3) of every byte from offset 64 to the end
 *   36      28           recognizer name, NUL padded
 *   64      N * 64       identities: name[56] (UTF-8, NUL padded), u32 first sample, u32 samples
 *   ...     R * 4  f32   sample scales s
 *   ...     R * D  i8    sample codes q
 *
 * A sample is an L2-normalised embedding e stored as q_i = rint(e_i / s), s = max|e_i| / 127. A
 * query is quantized the same way and scores float(sum q'_i q_i) * s' * s (float32, left to right):
 * the integer sum is exact, so these scores equal Python's bit for bit. An identity scores the best
 * of its samples; search returns the k best identities, ties to the earlier enrolled.
 *
 * face_gallery_save writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the directory: a
 * crash leaves the old or the new file, and face_gallery_load refuses anything else (size, CRC).
 * Compile with -ffp-contract=off (a fused multiply-add would round the score differently).
 */
#ifndef EDGETVM_FACE_GALLERY_H_
#define EDGETVM_FACE_GALLERY_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_GALLERY_NAME_BYTES 56

enum {
  FACE_GALLERY_OK = 0,
  FACE_GALLERY_EIO = -1,     /* the file cannot be opened, read or written */
  FACE_GALLERY_EFORMAT = -2, /* not a gallery file, another version, or sizes that do not add up */
  FACE_GALLERY_ECRC = -3,    /* the CRC-32 does not match: the file is damaged */
  FACE_GALLERY_ENOMEM = -4,
  FACE_GALLERY_EARG = -5,    /* a bad argument: empty or too long name, wrong size, NaN embedding */
  FACE_GALLERY_ENOTFOUND = -6
};

typedef struct {
  char name[FACE_GALLERY_NAME_BYTES]; /* NUL terminated (at most 55 bytes used) */
  uint32_t first;                     /* first sample */
  uint32_t count;                     /* number of samples, >= 1 */
} face_gallery_identity;

typedef struct {
  uint32_t dim;
  uint32_t n_identities;
  uint32_t n_samples;
  float threshold;
  char recognizer[29];
  face_gallery_identity* identities;
  float* scales;  /* n_samples */
  int8_t* codes;  /* n_samples x dim */
  uint32_t identity_capacity, sample_capacity;
} face_gallery;

typedef struct {
  int identity; /* index into identities */
  float score;
} face_match;

/* An empty gallery of dim-d embeddings of `recognizer` with a decision threshold. */
int face_gallery_init(face_gallery* g, int dim, float threshold, const char* recognizer);
/* Read a gallery file into g (which must not hold one). */
int face_gallery_load(face_gallery* g, const char* path);
/* Write g to path atomically and durably (see above). */
int face_gallery_save(const face_gallery* g, const char* path);
void face_gallery_free(face_gallery* g);

/* q = rint(e / s), s = max|e| / 127; FACE_GALLERY_EARG for an all-zero or non-finite e. */
int face_gallery_quantize(const float* embedding, int dim, int8_t* codes, float* scale);
/* Add one sample (an L2-normalised embedding) to identity `name`, creating it if new. */
int face_gallery_enroll(face_gallery* g, const char* name, const float* embedding);
int face_gallery_remove(face_gallery* g, const char* name);
/* The k best identities for `embedding`, best first, into out[0..k). Returns how many (<= k, <=
 * identities) or a negative error. */
int face_gallery_search(const face_gallery* g, const float* embedding, face_match* out, int k);

uint32_t face_gallery_crc32(uint32_t crc, const void* data, size_t n);
const char* face_gallery_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_GALLERY_H_ */
