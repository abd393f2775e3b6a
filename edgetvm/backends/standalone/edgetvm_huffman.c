/* Canonical Huffman decoding of coded weight records: see edgetvm_huffman.h for the layout.
 *
 * One look-up per symbol: a 2^12-entry table maps the next 12 bits to (symbol, code length), as
 * zlib's inflate_fast does for its first level; codes are limited to 12 bits by the encoder. The
 * bit buffer is refilled a byte at a time while bytes remain and reads zeros past the end, so a
 * truncated payload shows as consumed bits beyond P, which is refused. */
#include "edgetvm_huffman.h"

#include <stdio.h>
#include <string.h>

#define HEADER_BYTES 20u

static uint32_t read_u32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int fail(char* error, size_t error_size, const char* message) {
  if (error != NULL && error_size > 0) snprintf(error, error_size, "coded weights: %s", message);
  return -1;
}

/* Fills `table` (2^MAX_BITS entries, symbol << 4 | length; 0: no code starts with these bits). */
static int build_table(const uint8_t* lengths, unsigned k, uint16_t* table) {
  unsigned count[EDGETVM_HUFFMAN_MAX_BITS + 1] = {0};
  for (unsigned s = 0; s < k; ++s) {
    if (lengths[s] > EDGETVM_HUFFMAN_MAX_BITS) return -1;
    count[lengths[s]]++;
  }
  uint32_t space = 0; /* Kraft sum in units of 2^-MAX_BITS */
  for (unsigned n = 1; n <= EDGETVM_HUFFMAN_MAX_BITS; ++n) space += count[n] << (EDGETVM_HUFFMAN_MAX_BITS - n);
  if (space == 0 || space > (1u << EDGETVM_HUFFMAN_MAX_BITS)) return -1;
  uint32_t next[EDGETVM_HUFFMAN_MAX_BITS + 1];
  uint32_t code = 0;
  count[0] = 0;
  for (unsigned n = 1; n <= EDGETVM_HUFFMAN_MAX_BITS; ++n) {
    code = (code + count[n - 1]) << 1;
    next[n] = code;
  }
  memset(table, 0, sizeof(uint16_t) << EDGETVM_HUFFMAN_MAX_BITS);
  for (unsigned s = 0; s < k; ++s) {
    unsigned n = lengths[s];
    if (n == 0) continue;
    uint32_t span = 1u << (EDGETVM_HUFFMAN_MAX_BITS - n);
    uint32_t first = next[n]++ * span;
    for (uint32_t i = 0; i < span; ++i) table[first + i] = (uint16_t)(s << 4 | n);
  }
  return 0;
}

/* float16 to float32, exact (subnormals included): the scales of a scaled record. */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else {
    float magnitude = (float)mantissa * 0x1p-24f; /* mantissa * 2^-24: exact in binary32 */
    return sign ? -magnitude : magnitude;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static float read_scale(const uint8_t* scales, uint64_t g) {
  return half_to_float((uint16_t)(scales[2 * g] | scales[2 * g + 1] << 8));
}

int edgetvm_huffman_decode(const uint8_t* record, size_t size, uint8_t* out, size_t out_bytes, char* error,
                           size_t error_size) {
  int scaled = record != NULL && size >= HEADER_BYTES && memcmp(record, "EHS1", 4) == 0;
  if (record == NULL || size < HEADER_BYTES || (!scaled && memcmp(record, "EHF1", 4) != 0)) {
    return fail(error, error_size, "the record is shorter than its header or lacks the EHF1/EHS1 mark");
  }
  unsigned elem = record[4], interleaved = record[5];
  unsigned k = (unsigned)record[6] | (unsigned)record[7] << 8;
  uint64_t groups = read_u32(record + 8), per_group = read_u32(record + 12), payload_bytes = read_u32(record + 16);
  if ((elem != 1 && elem != 2 && elem != 4) || (scaled && elem != 4) || interleaved > 1 || k == 0 || k > 256) {
    return fail(error, error_size, "bad element size, layout or symbol count in the header");
  }
  uint64_t lengths_bytes = (k + 3u) & ~3u;
  /* EHF1: a table of k values per group; EHS1: one codebook and a float16 scale per group. Each
   * factor < 2^32 * 2^8 * 4: no overflow in 64 bits. */
  uint64_t table_bytes = scaled ? 4u * k + ((2 * groups + 3) & ~(uint64_t)3) : groups * k * elem;
  if (HEADER_BYTES + lengths_bytes + table_bytes + payload_bytes != size) {
    return fail(error, error_size, "the record's size does not match its header (truncated or padded)");
  }
  if (out_bytes % elem != 0 || groups * per_group != out_bytes / elem) { /* each factor < 2^32 */
    return fail(error, error_size, "the record decodes to a different number of elements than the tensor has");
  }
  uint16_t table[1u << EDGETVM_HUFFMAN_MAX_BITS];
  if (build_table(record + HEADER_BYTES, k, table) != 0) {
    return fail(error, error_size, "the code lengths are not a prefix code of at most 12 bits");
  }
  const uint8_t* values = record + HEADER_BYTES + lengths_bytes;
  const uint8_t* scales = values + 4u * k; /* EHS1 only */
  const uint8_t* payload = values + table_bytes;
  float codebook[256];
  if (scaled) memcpy(codebook, values, 4u * k);
  uint64_t buffer = 0;
  unsigned bits = 0;
  uint64_t pos = 0;
  /* Memory order: grouped walks group by group, interleaved cycles through the groups. */
  uint64_t outer = interleaved ? per_group : groups, inner = interleaved ? groups : per_group;
  for (uint64_t o = 0; o < outer; ++o) {
    float scale = scaled && !interleaved ? read_scale(scales, o) : 0.0f;
    for (uint64_t i = 0; i < inner; ++i) {
      uint64_t g = interleaved ? i : o;
      while (bits <= 56 && pos < payload_bytes) {
        buffer |= (uint64_t)payload[pos++] << (56 - bits);
        bits += 8;
      }
      uint16_t entry = table[buffer >> (64 - EDGETVM_HUFFMAN_MAX_BITS)];
      unsigned n = entry & 15u;
      if (n == 0) return fail(error, error_size, "a code the lengths do not define (corrupt payload)");
      if (n > bits) return fail(error, error_size, "the payload ends before the last weight (truncated)");
      buffer <<= n;
      bits -= n;
      unsigned symbol = entry >> 4;
      if (scaled) {
        /* A lone float32 multiply: never contracted into a fused multiply-add, so fl(s * T) as numpy. */
        float value = (interleaved ? read_scale(scales, g) : scale) * codebook[symbol];
        memcpy(out, &value, 4);
      } else {
        const uint8_t* value = values + (g * k + symbol) * elem;
        /* Constant sizes: the copies inline to one load and store, not a memcpy call per weight. */
        if (elem == 4) {
          memcpy(out, value, 4);
        } else if (elem == 2) {
          memcpy(out, value, 2);
        } else {
          *out = *value;
        }
      }
      out += elem;
    }
  }
  if (bits >= 8 || pos != payload_bytes) {
    return fail(error, error_size, "bytes left over after the last weight (corrupt header or payload)");
  }
  return 0;
}
