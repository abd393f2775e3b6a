/* Canonical Huffman decoding of one coded weight record (edgetvm/backends/standalone/weights.py).
 *
 * A record, little-endian, the layout weights.py writes:
 *
 *   0   "EHF1"
 *   4   u8  bytes per element (1, 2 or 4)
 *   5   u8  layout: 0 grouped (element i of group g is element g * L + i of the tensor),
 *               1 interleaved (element i * G + g: the groups are the last axis, HWIO's output channel)
 *   6   u16 symbols k (1..256)
 *   8   u32 groups G, 12 u32 elements per group L, 16 u32 payload bytes P
 *   20  u8  code length of each symbol (0..12; 0: unused), zero-padded to a multiple of 4
 *       G * k elements: the value table of each group
 *       P bytes: G * L canonical codes, most significant bit first
 *
 * Element i of group g is table[g * k + its symbol].
 *
 * A scaled record (a scale per output channel times a codebook: edgetvm/compression/sharing.py):
 *
 *   0   "EHS1"
 *   4   u8  4 (float32 elements)
 *   5   u8  layout, 6 u16 symbols k, 8 u32 G, 12 u32 L, 16 u32 P, 20 code lengths: as above
 *       k float32: the codebook T, shared by the groups
 *       G float16: the scale s_g of each group, zero-padded to a multiple of 4 bytes
 *       P bytes: the codes
 *
 * Element i of group g is the float32 product s_g * T[its symbol], one rounding (as numpy's float32
 * multiply, so the host build's weights come back bit for bit).
 *
 * Self-contained (no libc beyond memcpy/snprintf) so that the fuzz test compiles it alone. */
#ifndef EDGETVM_HUFFMAN_H_
#define EDGETVM_HUFFMAN_H_

#include <stddef.h>
#include <stdint.h>

#define EDGETVM_HUFFMAN_MAX_BITS 12

/* Decodes `record` (an EHF1 or EHS1 record, exactly `size` bytes) into `out`, which must be exactly the G * L elements of
 * the record. Returns 0, or -1 with a message in `error` (never reads outside `record`, never
 * writes outside `out`). */
int edgetvm_huffman_decode(const uint8_t* record, size_t size, uint8_t* out, size_t out_bytes, char* error,
                           size_t error_size);

#endif /* EDGETVM_HUFFMAN_H_ */
