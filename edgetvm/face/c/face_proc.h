/* Face pipeline pre- and post-processing for the board, in plain C99 with no dependencies.
 *
 * It mirrors edgetvm.face (Python) step by step with the same float32 arithmetic, so the board
 * and the host agree up to float rounding:
 *   letterbox:  bilinear resize (half-pixel centres, clamped), aspect kept, top-left, zero padded,
 *               RGB -> BGR minus a per-channel mean                       (edgetvm/face/detect.py)
 *   decode:     RetinaFace priors (steps 8/16/32, sizes 16,32/64,128/256,512, variances 0.1/0.2)
 *               or YuNet anchor-free cells (score = sqrt(cls * obj))      (edgetvm/face/detect.py)
 *   nms:        greedy, by decreasing score, stable                       (edgetvm/face/nms.py)
 *   align:      least-squares similarity to the ArcFace 112x112 template (Umeyama; in 2-D the closed
 *               form a = sum p.q / sum |p|^2, b = sum p x q / sum |p|^2), then an inverse-mapped
 *               bilinear warp, zero outside the image                     (edgetvm/face/align.py)
 * Compile with -ffp-contract=off: a fused multiply-add rounds differently from numpy.
 */
#ifndef EDGETVM_FACE_PROC_H_
#define EDGETVM_FACE_PROC_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_ALIGNED_SIZE 112

/* One face: box (x1, y1, x2, y2), score, landmarks (x0, y0, ..., x4, y4). */
typedef struct {
  float box[4];
  float score;
  float landmarks[10];
} face_det;

/* Where the image went in the detector input: detector pixel * scale = image pixel. */
typedef struct {
  int resized_w;
  int resized_h;
  float scale_x;
  float scale_y;
} face_letterbox_info;

/* Size of a w x h image scaled to fit in_w x in_h with its aspect ratio kept (round half up). */
void face_fit_size(int w, int h, int in_w, int in_h, int* new_w, int* new_h);

/* RGB uint8 (h, w, 3) -> detector input (1, 3, in_h, in_w) float32, BGR minus mean_bgr, zero pad. */
void face_letterbox(const uint8_t* rgb, int w, int h, int in_w, int in_h, const float mean_bgr[3],
                    float* nchw, face_letterbox_info* info);

/* Bilinear resize of an (h, w, c) uint8 image to (out_h, out_w, c) float32. */
void face_resize_bilinear(const uint8_t* src, int w, int h, int channels, float* dst, int out_w, int out_h);

/* The same resize of an (h, w, c) float32 map (the segmentation mask back to the image). */
void face_resize_bilinear_f32(const float* src, int w, int h, int channels, float* dst, int out_w, int out_h);

/* Number of RetinaFace priors (anchors) for an in_w x in_h input. */
int face_retinaface_num_priors(int in_w, int in_h);

/* Decode RetinaFace outputs loc (N, 4), conf (N, 2) softmaxed, landmarks (N, 10) into faces scoring
 * above score_threshold, in detector pixels. Returns how many were written (at most capacity). */
int face_decode_retinaface(const float* loc, const float* conf, const float* landmarks, int in_w, int in_h,
                           float score_threshold, face_det* out, int capacity);

/* Decode YuNet outputs (cls, obj, bbox, kps for strides 8, 16, 32: 12 pointers in the model's
 * output order) into faces scoring above score_threshold, in detector pixels. */
int face_decode_yunet(const float* const outputs[12], int in_w, int in_h, float score_threshold, face_det* out,
                      int capacity);

/* Greedy NMS in place: faces sorted by decreasing score (stable), overlapping ones (IoU above
 * iou_threshold with a kept face) removed; at most max_keep kept. Returns the number kept. */
int face_nms(face_det* faces, int n, float iou_threshold, int max_keep);

/* Intersection over union |A n B| / (|A| + |B| - |A n B|) of two boxes (x1, y1, x2, y2); 0 when both are empty. */
float face_box_iou(const float* a, const float* b);

/* Map faces from detector pixels to image pixels; boxes are clipped to the image. */
void face_to_image(face_det* faces, int n, const face_letterbox_info* info, int image_w, int image_h);

/* The 2x3 least-squares similarity taking the five landmarks onto the ArcFace 112x112 template. */
int face_alignment_matrix(const float landmarks[10], float matrix[6]);

/* out(v, u) = bilinear sample of rgb at matrix^-1 (u, v, 1); zero outside. Output (out_h, out_w, 3)
 * float32. Returns -1 when the matrix is singular. */
int face_warp_affine(const uint8_t* rgb, int w, int h, const float matrix[6], int out_w, int out_h, float* out_hwc);

/* Aligned (112, 112, 3) crop -> recognizer input (1, 3, 112, 112); normalize: (x - 127.5) / 128. */
void face_recognizer_input(const float* crop_hwc, int normalize, float* nchw);

void face_l2_normalize(float* v, int n);
float face_cosine(const float* a, const float* b, int n);

/* Read a binary PPM (P6) or PGM (P5) file with maxval 255 as RGB uint8 (malloc'ed; free() it). */
uint8_t* face_read_pnm(const char* path, int* w, int* h);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_PROC_H_ */
