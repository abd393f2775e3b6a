/* Face tracking and counting: face_track.h. */
#include "face_track.h"

#include <string.h>

int face_tracker_init(face_tracker* t, int detect_every, float iou_threshold, float presence_threshold) {
  if (detect_every < 1) return -1;
  memset(t, 0, sizeof *t);
  t->detect_every = detect_every;
  t->iou_threshold = iou_threshold;
  t->presence_threshold = presence_threshold;
  t->next_id = 1;
  return 0;
}

int face_tracker_detection_frame(const face_tracker* t) { return t->frame_index % t->detect_every == 0; }

int face_tracker_detect(face_tracker* t, const face_det* dets, int n) {
  int det_of_track[FACE_TRACK_MAX], matched_det[FACE_TRACK_MAX * 4];
  if (n < 0 || n > FACE_TRACK_MAX * 4) return -1;
  for (int i = 0; i < t->n_tracks; ++i) det_of_track[i] = -1;
  for (int j = 0; j < n; ++j) matched_det[j] = 0;
  /* Greedy by decreasing IoU: the best free pair each round; a strict > keeps the first of equal
   * pairs in track-major order, the order numpy's stable argsort of the flattened matrix gives. */
  for (;;) {
    int bi = -1, bj = -1;
    float best = -1.0f;
    for (int i = 0; i < t->n_tracks; ++i) {
      if (det_of_track[i] >= 0) continue;
      for (int j = 0; j < n; ++j) {
        if (matched_det[j]) continue;
        float iou = face_box_iou(t->tracks[i].box, dets[j].box);
        if (iou > best) best = iou, bi = i, bj = j;
      }
    }
    if (bi < 0 || best < t->iou_threshold) break;
    det_of_track[bi] = bj;
    matched_det[bj] = 1;
  }
  int kept = 0, fresh = 0;
  for (int i = 0; i < t->n_tracks; ++i) kept += det_of_track[i] >= 0;
  for (int j = 0; j < n; ++j) fresh += !matched_det[j];
  if (kept + fresh > FACE_TRACK_MAX) return -1;
  /* Survivors keep their order (ids increase along the array) and new ids are larger still, so
   * appending keeps the tracks sorted by id. */
  int k = 0;
  for (int i = 0; i < t->n_tracks; ++i) {
    if (det_of_track[i] < 0) {
      t->exits++;
      continue;
    }
    face_track* track = &t->tracks[k++];
    *track = t->tracks[i];
    memcpy(track->box, dets[det_of_track[i]].box, sizeof track->box);
    track->det = det_of_track[i];
    track->last_frame = t->frame_index;
  }
  for (int j = 0; j < n; ++j) {
    if (matched_det[j]) continue;
    face_track* track = &t->tracks[k++];
    memset(track, 0, sizeof *track);
    track->id = t->next_id++;
    memcpy(track->box, dets[j].box, sizeof track->box);
    track->det = j;
    track->first_frame = track->last_frame = t->frame_index;
    t->entries++;
  }
  t->n_tracks = k;
  t->frame_index++;
  return k;
}

int face_tracker_follow(face_tracker* t, const float* boxes, const float* presence) {
  int k = 0;
  for (int i = 0; i < t->n_tracks; ++i) {
    if (presence[i] < t->presence_threshold) {
      t->exits++;
      continue;
    }
    face_track* track = &t->tracks[k++];
    *track = t->tracks[i];
    memcpy(track->box, boxes + 4 * i, sizeof track->box);
    track->det = -1;
    track->last_frame = t->frame_index;
  }
  t->n_tracks = k;
  t->frame_index++;
  return k;
}
