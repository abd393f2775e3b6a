/* Face tracking and counting on the board: the bookkeeping of edgetvm/face/tracking.py in plain C99
 * (stable ids, greedy IoU association, entries and exits), with the networks left to the caller.
 *
 * Frames alternate between two kinds, chosen by face_tracker_detection_frame():
 *   detection frames (0, N, 2N, ...): the caller runs the detector and hands its faces to
 *     face_tracker_detect(). Detections are paired with the live tracks greedily by IoU, highest
 *     first (ties in track-major order, as numpy's stable argsort), a pair counting only at
 *     IoU >= iou_threshold. A matched track takes the detection's box; an unmatched detection
 *     starts a track with the next id (an entry); an unmatched track ends (an exit). Tracks stay
 *     sorted by id, and each one's `det` names the detection it holds this frame.
 *   frames in between: the caller follows each track's face itself (face_demo: FaceMesh on the crop
 *     of the track's previous mesh, kept in `roi`) and hands the new boxes and presence scores to
 *     face_tracker_follow(); a track whose presence is under presence_threshold ends (an exit).
 * With detect_every = 1 every frame is a detection frame, and tracking is IoU on the detections
 * alone (face_demo does this when the bundle has no FaceMesh).
 *
 * Typical use (face_demo.c, run_track):
 *
 *   face_tracker t;  face_tracker_init(&t, 5, 0.3f, 0.5f);
 *   for each frame:
 *     if (face_tracker_detection_frame(&t)) {
 *       n = detect(frame, dets);  face_tracker_detect(&t, dets, n);
 *       for each track k: t.tracks[k].roi = crop of the mesh of dets[t.tracks[k].det];
 *     } else {
 *       for each track k: mesh on t.tracks[k].roi -> boxes[k], presence[k], t.tracks[k].roi = its crop;
 *       face_tracker_follow(&t, boxes, presence);
 *     }
 *   t.entries, t.exits, t.n_tracks: the counts.
 *
 * Ids are never reused; a face that leaves and comes back is a new entry.
 */
#ifndef EDGETVM_FACE_TRACK_H_
#define EDGETVM_FACE_TRACK_H_

#include "face_mesh.h"
#include "face_proc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FACE_TRACK_MAX 64

typedef struct {
  int id;           /* 1, 2, ... in order of entry */
  float box[4];     /* x1, y1, x2, y2 in the current frame */
  int det;          /* on a detection frame the detection it holds, else -1 */
  int first_frame;  /* the frame it entered */
  int last_frame;   /* the last frame it was seen */
  face_roi roi;     /* the caller's follower state: the crop FaceMesh runs on next */
} face_track;

typedef struct {
  face_track tracks[FACE_TRACK_MAX];
  int n_tracks;
  int detect_every;
  float iou_threshold;
  float presence_threshold;
  int frame_index; /* the frame the next update is for */
  int next_id;
  int entries;     /* tracks started */
  int exits;       /* tracks ended */
} face_tracker;

/* An empty tracker; returns -1 when detect_every < 1. */
int face_tracker_init(face_tracker* t, int detect_every, float iou_threshold, float presence_threshold);

/* 1 when the coming frame is a detection frame (frame_index a multiple of detect_every). */
int face_tracker_detection_frame(const face_tracker* t);

/* A detection frame's n faces (image pixels): association, entries, exits; advances the frame.
 * Returns the number of live tracks, or -1 (tracker unchanged) when they would exceed FACE_TRACK_MAX. */
int face_tracker_detect(face_tracker* t, const face_det* dets, int n);

/* A frame in between: boxes (n_tracks x 4) and presence (n_tracks) of each track, in track order;
 * tracks under presence_threshold end. Advances the frame; returns the number of live tracks. */
int face_tracker_follow(face_tracker* t, const float* boxes, const float* presence);

#ifdef __cplusplus
}
#endif

#endif /* EDGETVM_FACE_TRACK_H_ */
