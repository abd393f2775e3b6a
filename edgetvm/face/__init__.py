"""Face analysis on top of edgetvm: detection (RetinaFace, YuNet), 5-point alignment, embedding
(SFace, MobileFaceNet), verification; identification against a gallery (``face.gallery``,
``face.identification``) gated by face quality (``face.quality``); dense landmarks and head pose
(``landmarks``), age, gender, eyes and mouth (``attributes``), tracking and counting (``tracking``);
person/background segmentation (``segmentation``, MediaPipe's selfie segmenter); and the board
bundle (``face.bundle``) that runs the same pipeline in C next to the standalone compiled networks.
"""

from .align import ARCFACE_TEMPLATE, align_face, alignment_matrix, umeyama
from .attributes import AttributeEstimator, Attributes
from .detect import Face, decode_retinaface, decode_yunet, letterbox, retinaface_priors
from .gallery import Gallery, load_gallery, save_gallery
from .image import draw_faces, read_image, resize_bilinear, warp_affine, write_ppm
from .landmarks import FaceLandmarker, FaceMesh, FaceRoi, HeadPose, Iris, head_pose
from .nms import box_iou, nms
from .pipeline import FacePipeline, Verification, cosine_similarity, l2_normalize
from .quality import Quality, assess_quality
from .segmentation import Segmentation, SelfieSegmenter, blur_background, replace_background
from .tracking import FaceTracker, Track

__all__ = [
    "AttributeEstimator",
    "Attributes",
    "FaceLandmarker",
    "FaceMesh",
    "FaceRoi",
    "FaceTracker",
    "HeadPose",
    "Iris",
    "Track",
    "head_pose",
    "ARCFACE_TEMPLATE",
    "Face",
    "FacePipeline",
    "Gallery",
    "Quality",
    "Segmentation",
    "SelfieSegmenter",
    "Verification",
    "align_face",
    "assess_quality",
    "alignment_matrix",
    "blur_background",
    "box_iou",
    "cosine_similarity",
    "decode_retinaface",
    "decode_yunet",
    "draw_faces",
    "l2_normalize",
    "letterbox",
    "load_gallery",
    "nms",
    "read_image",
    "replace_background",
    "resize_bilinear",
    "retinaface_priors",
    "save_gallery",
    "umeyama",
    "warp_affine",
    "write_ppm",
]
