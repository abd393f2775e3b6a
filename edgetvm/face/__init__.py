"""Face analysis on top of edgetvm: detection (RetinaFace, YuNet), 5-point alignment, embedding
(SFace, MobileFaceNet), verification, person/background segmentation (MediaPipe's selfie segmenter);
and the board bundle (``face.bundle``) that runs the same pipeline in C next to the standalone
compiled networks.
"""

from .align import ARCFACE_TEMPLATE, align_face, alignment_matrix, umeyama
from .detect import Face, decode_retinaface, decode_yunet, letterbox, retinaface_priors
from .image import draw_faces, read_image, resize_bilinear, warp_affine, write_ppm
from .nms import box_iou, nms
from .pipeline import FacePipeline, Verification, cosine_similarity, l2_normalize
from .segmentation import Segmentation, SelfieSegmenter, blur_background, replace_background

__all__ = [
    "ARCFACE_TEMPLATE",
    "Face",
    "FacePipeline",
    "Segmentation",
    "SelfieSegmenter",
    "Verification",
    "align_face",
    "alignment_matrix",
    "blur_background",
    "box_iou",
    "cosine_similarity",
    "decode_retinaface",
    "decode_yunet",
    "draw_faces",
    "l2_normalize",
    "letterbox",
    "nms",
    "read_image",
    "replace_background",
    "resize_bilinear",
    "retinaface_priors",
    "umeyama",
    "warp_affine",
    "write_ppm",
]
