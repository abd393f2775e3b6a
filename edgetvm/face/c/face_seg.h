/* Person segmentation on the board: the pre- and post-processing around the selfie segmenter
 * (segmenter.so), mirroring edgetvm/face/segmentation.py with the same float32 arithmetic:
 *   input:      the whole image resized to the segmenter's in_w x in_h (aspect not kept; bilinear,
 *               half-pixel centres, clamped: face_resize_bilinear), RGB times 1/255, NHWC
 *   mask:       the (in_h, in_w) person probability resized back to the image (h, w) with the same
 *               bilinear taps, clipped to [0, 1]
 *   composite:  out = m * image + (1 - m) * background per channel, rounded half to even (rintf)
 * Background blur is not here: the Python side blurs with Pillow's Gaussian, which has no C twin in
 * this library; replacement by a colour or an image of the picture's size is.
 * Compile with -ffp-contract=off, like face_proc.c.
 */
#ifndef EDGETVM_FACE_SEG_H_
#define EDGETVM_FACE_SEG_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RGB uint8 (h, w, 3) -> segmenter input (1, in_h, in_w, 3) float32 in [0, 1]. */
void face_seg_input(const uint8_t* rgb, int w, int h, int in_w, int in_h, float* nhwc);

/* Segmenter output (in_h, in_w) -> mask (h, w) float32 in [0, 1], P(person) per image pixel. */
void face_seg_mask(const float* prob, int in_w, int in_h, int w, int h, float* mask);

/* Fraction of the mask's w x h pixels at or above threshold. */
float face_seg_person_fraction(const float* mask, int w, int h, float threshold);

/* out = m * rgb + (1 - m) * background, all (h, w, 3) uint8 (out may alias rgb). */
void face_seg_composite(const uint8_t* rgb, const float* mask, const uint8_t* background, int w, int h,
                        uint8_t* out);

/* The same with a single background colour. */
void face_seg_composite_color(const uint8_t* rgb, const float* mask, const uint8_t color[3], int w, int h,
                              uint8_t* out);

/* round(255 * m) per pixel: the mask as an 8-bit grey picture, 255 for the person. */
void face_seg_mask_to_grey(const float* mask, int w, int h, uint8_t* grey);

/* Write a binary PGM (channels 1) or PPM (channels 3), maxval 255. Returns 0, or -1 when it cannot. */
int face_write_pnm(const char* path, const uint8_t* pixels, int w, int h, int channels);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_SEG_H_ */
