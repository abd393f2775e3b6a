/* Face quality on the board: the twin of edgetvm/face/quality.py (read its docstring for the measures
 * and why their bounds are what they are). Each measure maps linearly onto [0, 1] between a useless
 * and a good bound; the score is the weakest. face_demo --enroll refuses faces scoring under its
 * --min-quality (default FACE_DEFAULT_MIN_QUALITY), as `edgetvm face enroll` does on the host.
 */
#ifndef EDGETVM_FACE_QUALITY_H_
#define EDGETVM_FACE_QUALITY_H_

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_DEFAULT_MIN_QUALITY 0.5f

typedef struct {
  float score;                                 /* min of the four components, in [0, 1] */
  float size, sharpness, pose, exposure;       /* components, in [0, 1] */
  float eye_distance_px, laplacian_variance;   /* measures */
  float yaw_deg, roll_deg, pitch_ratio;
  float mean_grey, clipped_fraction;
} face_quality;

/* Quality of the face with these five landmarks (image pixels) whose aligned 112x112 RGB crop
 * (float32 0..255, face_warp_affine's output) is crop_hwc. Returns -1 for degenerate landmarks. */
int face_assess_quality(const float* crop_hwc, const float landmarks[10], face_quality* q);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_QUALITY_H_ */
