"""Deep Compression (issue 19): the standalone ARM artifact's size and the accuracy each stage costs.

    .venv/bin/python benchmarks/bench_compression.py [--models sface,retinaface,mobilefacenet]
        [--configs fp32,int8,k16,k256,sens0.01,...] [--target cortex-a7] [--decode-cost] [--instructions]
        [--json out.json]

Per model and configuration: the weight bytes per stage (fp32 -> pruned -> int8 -> clustered -> coded,
``report.details["compression"]``), the size of the standalone ARM .so written with
``--entropy huffman`` against the issue's goal, and the accuracy against the float model on the host:

    sface          embedding cosine on aligned LFW faces 20..31 (calibration uses faces 0..5)
    retinaface     320x320, on the same held-out faces: best-match box IoU and landmark error (px)
    mobilefacenet  the paper's architecture with random weights (zoo/architectures.py): size only,
                   plus output cosine on random inputs

Anchors the issue cites: TF-MOT clustering MobileNetV2 12.38 -> 4.05 MB (3.06x) zipped at 32 clusters,
coremltools 4-bit palettization 3.38x smaller than fp16, Deep Compression 35x (AlexNet, retrained).

Measured (cortex-a7 standalone .so, no retraining; goals: SFace 3.5 MB, RetinaFace 250 KB, MFN 0.45 MB):

    sface sens0.01          5,224,036 B (1.49x the goal)  min cosine 0.9916  weights 38.7 MB -> 5.0 MB (7.7x)
    sface k256 / k64       28,997,220 / 28,456,548 B      min cosine 0.9994 / 0.9823 (stem, embedding kept)
    retinaface fp32 / k16   2,266,728 / 734,824 B         k16: min IoU 0.67, 9 of 12 faces lost
    mobilefacenet prune0.5-k8-all  390,756 B (0.87x)      decoding 16.5 M instructions = 0.31 inference
    sface refit-conv64-fc4  5,174,884 B (1.48x the goal)  min cosine 0.9883  (refit on 10 faces; lv140 since shared)
    sface norefit-k16 / refit-k16  27,858,532 / 27,862,628 B  min cosine 0.7685 / 0.9364 (stem, embedding kept)

The centroid refit (compression/refit.py) pays most at small k: SFace at k=16 min cosine 0.768 ->
0.936 on the held-out faces (0.950 with 256 rows per face instead of refit.MAX_ROWS = 512 in all). It does not reach the SFace goal: the
50176x128 embedding layer alone is 6.4 M weights, 2.39 MB at k=4 with a codebook per input feature
(0.8 MB of it tables), and the convolutions need k >= 64 (2.5 MB) for cosine ~0.99.

Magnitude pruning before clustering (compression/sharing.py: the smallest |w| of the embedding lv140 set
to exactly zero, the survivors on one shared k=16 codebook with zero the 16th code, refit; convs not
pruned: 50% of every conv took min cosine to 0.37). Coded bytes from the host build on 12 held-out faces,
refit on 10 (10 < 16 k faces, so lv140's codebook is shared, not per output column: see ClusterWeights):

    lv140 sparsity   convs          coded B     .so B       min / mean cosine
    0   (k=16)       k64            5,484,958*              0.9902 / 0.9931
    0.5              k64            4,738,542               0.9892 / 0.9920
    0.7              k16            3,532,647               0.9308 / 0.9488
    0.8              k64            3,887,261   4,175,460   0.9714 / 0.9781   prune-emb0.8-conv64
    0.9              k64            3,622,573*              0.9360 / 0.9506
    0.9              k32            3,598,302               0.9335 / 0.9474
    0.9              k64, conv_14 16  3,154,994 3,442,276   0.9354 / 0.9483   prune-emb0.9-conv64-conv14k16
    refit-conv64-fc4, lv140 now one k=4 codebook (was one per input feature, 0.8 MB of tables):
                     k64            4,071,065               0.9832 / 0.9888   (was 4,937,418 B, 0.9883)

So the size goal is met (3.44 MB) only at min cosine 0.935, and cosine >= 0.99 only at 4.7 MB and up:
without retraining the embedding loses too much to pruning (relative output error 0.09 after the
refit at 90% sparse, 0.037 at 80%), and Huffman codes a zero in at least 1 bit (90% sparse costs
~1.4 bits a weight, 1.07 MB for lv140). conv_14 at k=16 costs almost nothing (0.9360 -> 0.9354).
(*: measured before each table was ordered most frequent value first, huffman.ranked_symbols.)

RetinaFace's .so without weights was ~600 KB (2,410,088 B, 1,804,080 B of them weights): 316 KB of it
TVM's per-kernel argument checks, 40 KB their message strings, ~200 KB kernels whose loops around the
inlined NEON tiles LLVM unrolled whole. The size-first build (``optimize="size"``, the size-* configs;
backends/standalone/build.py) leaves 85 KB, bit-exact with the default build, and is not slower:

    retinaface (cortex-a7)  .so B      weights B   rest B   insn/inference  min IoU  max lmk px  same faces
    fp32                    2,410,088  1,804,080   606,008  152.40 M        1.0      0.0         yes
    size-fp32               1,889,904  1,804,080    85,824  147.04 M        1.0      0.0         yes
    size-k256                 595,568    511,056    84,512                  0.987    0.51        yes
    size-k64                  431,728    346,672    85,056                  0.825    3.64        no (2 of 12)
    size-k16                  353,904    270,144    83,760                  0.670    11.3        no (9 missed)
    size-sens0.005            460,400    376,976    83,424                  0.894    2.89        no
    size-refit-k96            476,784    390,368    86,416                  0.982    1.32        yes (smallest)
    size-refit-k64            431,728    346,672    85,056                  0.911    2.25        no (landmarks)
    size-refit-k32            411,248    324,624    86,624                  0.896    3.98        no (1 missed)
    size-refit-k16            353,904    270,144    83,760                  0.757    10.3        no (2 missed)

So 250 KB is not reached with the same faces: the code is no longer the gap, the weights are. One
k-means codebook per tensor needs ~7 bits a weight (k=128: min IoU 0.968, 0.83 px, on the host) for
the issue's bar, ~370 KB for RetinaFace's 420 K conv weights; at k=64 one borderline face (score 0.88)
drops to IoU 0.825 and another's landmarks move 3.6 px. Choosing k per layer by the summed output
error on 4 calibration images (size-sens0.005: k from 4 to 256, 16 layers at 256, 18 minutes) does
not track the bar better than k=64 for every layer. The centroid refit, layer by layer on the
clustered model's inputs (numpy runs RetinaFace's nearest resize since pruning/numpy_eval.py does),
halves the drift: at k=16 the held-out relative output error (boxes, scores, landmarks) is 0.82 /
0.10 / 0.76 without it, 0.57 / 0.04 / 0.52 with it (0.86 / 0.11 / 0.71 when each layer was refit on
the original model's input), and 2 faces are missed instead of 9; at k=64 it comes within 0.25 px of
the bar. The weights at k=16 are 270 KB alone: 250 KB with the same faces needs fewer bits than
clustering without retraining keeps accurate (a scale per channel with a shared codebook, or
retraining as Deep Compression does, are the next steps).

Scaled codebooks (``compress={"scaled": True}``, compression/sharing.py): a float16 scale per output
channel times one codebook per layer, the scales then the codebook refit by least squares (twice),
stored as EHS1 records (scales, codebook, codes) that the C runtime multiplies back at create. Measured
at the commit that added them (size-k16 remeasured there: the code besides the weights is ~95 KB now):

    retinaface (cortex-a7)  .so B      weights B   min IoU  max lmk px  missed  decode / inference
    size-k16                  349,808    253,984   0.670    11.3        9
    size-scaled-k16           321,136    227,024   0.910    4.61        1       36.3 M / 116.0 M (0.31)
    size-scaled-k32           378,480    282,576   0.954    3.15        0       37.8 M / 116.0 M (0.33)

On the host (coded weight bytes of the compile report): without the scale refit, scaled k16 missed 2
faces (IoU 0.84, 7.6 px); 4 refit rounds instead of 2: 0.914, 4.53 px; scales from each channel's RMS
instead of its max: no face missed but 8.4 px; the heads (lv100..lv114) kept float: IoU 0.920, 3.7 px,
1 missed (241 KB coded); k=8 everywhere: 2 missed, 13.8 px (172 KB coded); k=8 on the 1x1 and 3x3
convs, k=32 on the depthwise convs and heads: 1 missed, 10.0 px (178 KB coded). So at the bar the
weights stay near 280 KB and 250 KB is not reached: a per-channel scale halves what k=16 loses, but
k <= 8, which 250 KB needs with ~95 KB of code, loses faces without retraining. A bias correction
(Nagel et al. 2019: each output's mean shift on the calibration rows added to the conv's bias), tried
after each layer's refit while the layers after it were refit without it, made both worse (k=16: IoU
0.857, 8.1 px; k=32: 0.888, 3.99 px) and is not kept; folding it into the layer-by-layer run, so the
later layers see it, was not tried. A better coder of the indices does
not pay: over RetinaFace's 418,328 clustered weights (k-means' scaled codebooks, before the refit),
Huffman takes 3.718 bits a weight at k=16 against an order-0 entropy of 3.687 (194.4 vs 192.8 KB),
2.748 vs 2.713 at k=8: an arithmetic or ANS coder would save under 2 KB.

Scaled codebooks with each layer's k chosen by measured sensitivity (``compress={"scaled": True,
"max_error": E, "clusters": 8}``: k from 8 to 256 per layer, or kept, for the fewest coded bytes at a
summed relative output error <= E on 4 calibration faces, each candidate measured with its scales and
codebook refit; sensitivity.py). These rows were measured with a size-first link that also dropped
RELRO and the build-id (349,808 -> 346,092 B on size-k16, so code and tables ~92 KB here); that link
was not kept (RELRO keeps the call table and GOT read-only after loading: 3.7 KB is not worth it):

    retinaface (cortex-a7)  .so B      weights B   min IoU  max lmk px  missed  k per layer         seconds
    size-scaled-sens0.005     427,632    334,608   0.918    2.92        0       8..256, 3 kept      407
    size-scaled-sens0.02      368,620    276,512   0.867    3.19        0       8 x12 .. 128 x7     748*
    size-scaled-sens0.05      335,932    243,824   0.876    4.93        0       8 x15 .. 128 x1     744*
    (*: two runs side by side on 2 cores)

Against one k for every layer (size-scaled-k32: 378,480 B, 0.954, 3.15 px) the measured allocation is
no better at the bar: at the same bytes (sens0.02) IoU is lower, and 0.005 spends 50 KB more for
0.23 px. The summed output error of boxes, scores and landmarks on 4 faces does not track the
held-out worst box and landmark (and these configs refit on the same 4 faces, the k= configs on all
calibration faces: not separated). The code besides the weights of the size-k16 .so (95,824 B;
arm-linux-gnueabihf-size -A, nm on its objects): kernels 62 KB (55 fused compute functions 44.4 KB,
31 NEON microkernels 12.5 KB, 55 packed-call wrappers 5.3 KB), model tables 15.6 KB (args 6.2,
segments 4.5, int64 shapes 2.0, names 1.9, calls 1.1), runtime and decoder ~4 KB, dynamic symbols
and relocations ~4.5 KB, RELRO padding 3.5 KB. Even with no code at all the weights alone
would have to fit 250 KB, and the scaled codebooks that do (k16: 227 KB, 1 face missed, 4.61 px;
sens0.05: 244 KB, 4.93 px) miss the bar: 250 KB with the same faces is not reached without retraining.

SFace with scaled codebooks (held-out min / mean cosine; the stem conv_1 kept, lv140 the embedding):

    config                              coded B     .so B (speed build)  min / mean cosine
    scaled-conv16-fc4                   3,081,479   3,393,124 (0.97x)    0.9405 / 0.9610
    scaled-conv32-fc4                   3,463,413   3,774,052            0.9720 / 0.9844
    convs k=48 scaled, lv140 k=4        3,726,796   (host only)          0.9867 / 0.9908
    convs k=64 scaled, lv140 k=4        3,879,251   (host only)          0.9896 / 0.9922
    lv140 k=4 scaled alone (convs fp32)  lv140 1,519,355                 0.9917 / 0.9946
    lv140 k=8 scaled alone               lv140 2,199,045                 0.9985 / 0.9989

The embedding at k=4 with a scale per output column costs little (0.9917 alone); the convolutions
are what the cosine loses, and at k=64 (0.9896, 3.88 MB coded) they still miss 0.99 and 3.5 MB both.
Against the per-layer codebooks above (refit-conv64-fc4: 4,071,065 B coded at 0.9832) the scales buy
a smaller artifact at a higher cosine, not yet the goal.

GPTQ's assignment (``compress={"assign": "gptq"}``, ``--cluster-assign gptq``, compression/assign.py,
the default with calibration since): each weight's code chosen against its layer's output error on the
calibration inputs, rounding errors spread over the weights not yet coded, then the same refit. The
rows above keep k-means' nearest codes (their configs name ``"assign": "nearest"``, see CONFIGS):

    sface (cortex-a7)        .so B      coded B    min / mean cosine   seconds (both compiles, build)
    scaled-conv16-fc4        3,393,124  3,081,479  0.9405 / 0.9610
    gptq-scaled-conv16-fc4   3,393,124  3,082,858  0.9695 / 0.9826     167
    scaled-conv32-fc4        3,774,052  3,463,413  0.9720 / 0.9844
    gptq-scaled-conv32-fc4   3,774,052  3,463,808  0.9861 / 0.9916     204
    gptq-scaled-mixed        3,438,180  3,127,028  0.9796 / 0.9865     161  (dw k64, conv_2..7 k32)

    retinaface (cortex-a7)   .so B      weights B  min IoU  max lmk px  missed  (gptq k16: 83 s, k8: 53 s)
    size-scaled-k16          321,136    227,024    0.910    4.61        1
    size-gptq-k16            321,136    227,408    0.935    2.60        0
    size-scaled-k8           267,888    174,128    0.730    13.8        2
    size-gptq-k8             271,984    175,776    0.870    6.28        0

GPTQ closes about half of what the scaled codebooks lose at the same bytes (SFace's worst cosine
loss 0.060 -> 0.031 at conv k=16, 0.028 -> 0.014 at k=32), and still misses both goals: SFace at
<= 3.5 MB reaches min cosine 0.9796 (0.99 wanted), and no config measured reaches 0.99 on the worst
face (conv k=32: 0.9861 at 3.77 MB; the embedding alone at k=4, 1.52 MB of the ~3.1 MB coded, keeps
0.9917, and GPTQ leaves it nearest: its 50176 x 50176 Hessian is out of reach, refit.MAX_ASSIGN_DEPTH).
RetinaFace at k=16 finds every face again but its landmarks are 2.6 px off (2 px wanted) at ~320 KB
(250 KB wanted); k=8, which 250 KB needs with ~95 KB of code, is 6.3 px off.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOALS = {"sface": 3.5e6, "retinaface": 250e3, "mobilefacenet": 0.45e6}
CONFIGS = {
    "fp32": {},
    "int8": {"quantize": "int8"},
    "k16": {"compress": {"clusters": 16}},
    "k32": {"compress": {"clusters": 32}},
    "k64": {"compress": {"clusters": 64}},
    "k256": {"compress": {"clusters": 256}},
    "int8-k16": {"quantize": "int8", "compress": {"clusters": 16}},
    "int8-k32": {"quantize": "int8", "compress": {"clusters": 32}},
    # k per layer by measured sensitivity at a summed relative output error budget (calibration faces).
    "sens0.002": {"compress": {"max_error": 0.002}},
    "sens0.005": {"compress": {"max_error": 0.005}},
    "sens0.01": {"compress": {"max_error": 0.01}},
    "sens0.02": {"compress": {"max_error": 0.02}},
    "int8-sens0.01": {"quantize": "int8", "compress": {"max_error": 0.01}},
    "k4": {"compress": {"clusters": 4}},
    "prune0.3-k8": {"prune": 0.3, "compress": {"clusters": 8}},
    "prune0.5-k8": {"prune": 0.5, "compress": {"clusters": 8}},
    "prune0.5-k4-all": {"prune": 0.5, "compress": {"clusters": 4, "keep": []}},
    "prune0.5-k8-all": {"prune": 0.5, "compress": {"clusters": 8, "keep": []}},
    # Centroids refit by least squares on the calibration faces (compression/refit.py), against the same
    # clustering without ("norefit-"): SFace's stem kept, the 50176x128 embedding layer at k=4.
    "refit-k16": {"calibrate": True, "compress": {"clusters": 16}},
    "norefit-k16": {"calibrate": True, "compress": {"clusters": 16, "refit": False}},
    "refit-conv64-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 64, "lv140": 4}, "keep": ["conv_1_*"]}},
    "refit-conv16-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 16, "lv140": 4}, "keep": ["conv_1_*"]}},
    # Scaled codebooks (a float16 scale per output channel, one codebook per layer, both refit).
    "scaled-conv16-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 16, "lv140": 4}, "keep": ["conv_1_*"],
                                                          "scaled": True}},
    "scaled-conv32-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 32, "lv140": 4}, "keep": ["conv_1_*"],
                                                          "scaled": True}},
    # The same with each weight's code chosen by GPTQ against the layer's output error (compression/assign.py).
    "gptq-scaled-conv16-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 16, "lv140": 4},
                                                               "keep": ["conv_1_*"], "scaled": True, "assign": "gptq"}},
    "gptq-scaled-conv32-fc4": {"calibrate": True, "compress": {"layers": {"conv_*": 32, "lv140": 4},
                                                               "keep": ["conv_1_*"], "scaled": True, "assign": "gptq"}},
    # GPTQ with the ~100 KB left under 3.5 MB spent on the depthwise convs (k=64) and the small pointwise ones.
    "gptq-scaled-mixed": {"calibrate": True, "compress": {
        "layers": {"conv_*_dw_*": 64, "conv_[2-7]_conv2d": 32, "conv_*": 16, "lv140": 4}, "keep": ["conv_1_*"],
        "scaled": True, "assign": "gptq"}},
    # Magnitude pruning before clustering (Deep Compression's first step, compression/sharing.py): the
    # embedding lv140 pruned, its survivors on one shared k=16 codebook (zero the 16th code), refit.
    "prune-emb0.8-conv64": {"calibrate": True, "compress": {
        "layers": {"conv_*": 64, "lv140": 16}, "keep": ["conv_1_*"], "sparsity": {"lv140": 0.8}}},
    "prune-emb0.9-conv64-conv14k16": {"calibrate": True, "compress": {
        "layers": {"conv_14_*": 16, "conv_*": 64, "lv140": 16}, "keep": ["conv_1_*"], "sparsity": {"lv140": 0.9}}},
    # The size-first build (compile(..., optimize="size")): the same kernels without TVM's argument checks,
    # at LLVM O2, the NEON tiles called rather than inlined (backends/standalone/build.py).
    "size-fp32": {"optimize": "size"},
    "size-k16": {"optimize": "size", "compress": {"clusters": 16}},
    "size-k32": {"optimize": "size", "compress": {"clusters": 32}},
    "size-k64": {"optimize": "size", "compress": {"clusters": 64}},
    "size-k256": {"optimize": "size", "compress": {"clusters": 256}},
    "size-refit-k16": {"optimize": "size", "calibrate": True, "compress": {"clusters": 16}},
    "size-refit-k32": {"optimize": "size", "calibrate": True, "compress": {"clusters": 32}},
    "size-refit-k64": {"optimize": "size", "calibrate": True, "compress": {"clusters": 64}},
    "size-refit-k96": {"optimize": "size", "calibrate": True, "compress": {"clusters": 96}},
    "size-refit-k128": {"optimize": "size", "calibrate": True, "compress": {"clusters": 128}},
    # A float16 scale per output channel times one codebook per layer (compression/sharing.py,
    # cluster_scaled), codebook and scales refit on the calibration faces (refit.py).
    "size-scaled-k16": {"optimize": "size", "calibrate": True, "compress": {"clusters": 16, "scaled": True}},
    "size-scaled-k32": {"optimize": "size", "calibrate": True, "compress": {"clusters": 32, "scaled": True}},
    "size-scaled-k8": {"optimize": "size", "calibrate": True, "compress": {"clusters": 8, "scaled": True}},
    "size-gptq-k8": {"optimize": "size", "calibrate": True, "compress": {"clusters": 8, "scaled": True,
                                                                        "assign": "gptq"}},
    "size-gptq-k16": {"optimize": "size", "calibrate": True, "compress": {"clusters": 16, "scaled": True,
                                                                         "assign": "gptq"}},
    "size-gptq-k32": {"optimize": "size", "calibrate": True, "compress": {"clusters": 32, "scaled": True,
                                                                         "assign": "gptq"}},
    # Scaled codebooks with each layer's k (8..256) chosen by measured sensitivity (compression/sensitivity.py).
    "size-scaled-sens0.005": {"optimize": "size", "compress": {"clusters": 8, "max_error": 0.005, "scaled": True}},
    "size-scaled-sens0.02": {"optimize": "size", "compress": {"clusters": 8, "max_error": 0.02, "scaled": True}},
    "size-scaled-sens0.05": {"optimize": "size", "compress": {"clusters": 8, "max_error": 0.05, "scaled": True}},
    "size-sens0.002": {"optimize": "size", "compress": {"max_error": 0.002, "refit": False}},
    "size-sens0.005": {"optimize": "size", "compress": {"max_error": 0.005, "refit": False}},
    "size-sens0.01": {"optimize": "size", "compress": {"max_error": 0.01, "refit": False}},
}
# The configs above that do not name an assignment were measured with k-means' nearest codes, the default
# before compression/assign.py (GPTQ is the default with calibration now): they keep them, so that each
# row of the docstring is what its config measures. A config added from here on: name it.
for _options in CONFIGS.values():
    _options.get("compress", {}).setdefault("assign", "nearest")


def needs_calibration(config: str) -> bool:
    options = CONFIGS[config]
    return "quantize" in options or "max_error" in options.get("compress", {}) or options.get("calibrate", False)


def held_out_faces(net) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recognizer inputs of aligned LFW faces 20..31, and the RGB images they come from."""
    from edgetvm.face.align import align_face
    from edgetvm.face.calibration import find_faces
    from edgetvm.face.evaluation import lfw_face
    from edgetvm.face.networks import recognizer_input

    crops, images = [], []
    for i in range(20, 32):
        image = lfw_face(i)
        faces = find_faces(image)
        if faces:
            crops.append(recognizer_input(net, align_face(image, faces[0].landmarks)))
            images.append(image)
    return crops, images


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def detections(runner, net, images):
    from edgetvm.face.detect import decode_retinaface, select_faces
    from edgetvm.face.networks import detector_input

    found = []
    for image in images:
        x, box = detector_input(net, (320, 320), image)
        det = decode_retinaface(runner(x), 320, 320, 0.6)
        found.append(select_faces(det, box, image.shape[1], image.shape[0], 0.4, 50))
    return found


def accuracy(name: str, reference, compiled, data) -> dict:
    if name == "sface":
        cos = [cosine(compiled(x), reference(x)) for x in data["crops"]]
        return {"min_cosine": min(cos), "mean_cosine": float(np.mean(cos)), "faces": len(cos)}
    if name == "retinaface":
        want = detections(reference, data["net"], data["images"])
        got = detections(compiled, data["net"], data["images"])
        ious, landmark_px, missed = [], [], 0
        for w_faces, g_faces in zip(want, got):
            for w in w_faces:
                best = max(g_faces, key=lambda g: iou(w.box, g.box), default=None)
                if best is None or iou(w.box, best.box) < 0.5:
                    missed += 1
                    continue
                ious.append(iou(w.box, best.box))
                landmark_px.append(float(np.abs(best.landmarks - w.landmarks).max()))
        found = {"min_box_iou": min(ious, default=0.0), "max_landmark_px": max(landmark_px, default=float("inf")),
                 "faces": sum(len(w) for w in want), "missed": missed,
                 "extra": sum(len(g) for g in got) - sum(len(w) for w in want) + missed}
        # The bar: every face found again, box IoU >= 0.9, landmarks within 2 px of fp32.
        found["same_faces"] = (not missed and not found["extra"] and found["min_box_iou"] >= 0.9
                               and found["max_landmark_px"] <= 2.0)
        return found
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, compiled.inputs[0].shape).astype(np.float32) for _ in range(4)]
    return {"min_cosine_random_inputs": min(cosine(compiled(x), reference(x)) for x in xs)}


def model_source(name: str):
    from edgetvm.zoo import fetch
    from edgetvm.zoo.architectures import mobilefacenet

    if name == "mobilefacenet":
        return mobilefacenet(), None
    return fetch(name), ({"input": (1, 3, 320, 320)} if name == "retinaface" else None)


def decoding_instructions(arm, so: Path, tmp: Path) -> dict:
    """Guest instructions (qemu) of decoding at load: a whole run of ``so`` less the same model with its
    weights read in place, against one inference."""
    from edgetvm import emulate

    rng = np.random.default_rng(0)
    x = [rng.uniform(-1, 1, spec.shape).astype(np.float32) for spec in arm.inputs]
    arm.weights = "fp32"
    plain = arm.export(tmp / "plain.so", standalone=True)
    cpu = arm.target.qemu_cpu
    coded_run, plain_run = (emulate.run_standalone_arm(path, x, cpu=cpu, count=True) for path in (so, plain))
    exact = all(np.array_equal(a, b) for a, b in zip(coded_run.outputs, plain_run.outputs))
    per_inference = emulate.instructions_per_inference(plain, x, cpu=cpu, n=1)
    decode = coded_run.instructions - plain_run.instructions
    return {"decode_instructions": decode, "inference_instructions": per_inference,
            "decode_over_inference": round(decode / per_inference, 4), "coded_outputs_equal_plain": exact}


def inference_instructions(arm, so: Path) -> int:
    """Guest instructions (qemu) of one inference of ``so``, its load excluded: the speed side of
    ``optimize="size"``."""
    from edgetvm import emulate

    rng = np.random.default_rng(0)
    x = [rng.uniform(-1, 1, spec.shape).astype(np.float32) for spec in arm.inputs]
    return emulate.instructions_per_inference(so, x, cpu=arm.target.qemu_cpu, n=2)


def measure(name: str, configs: list[str], target: str, decode_cost: bool = False,
            instructions: bool = False) -> list[dict]:
    import edgetvm
    from edgetvm.backends.standalone import build_standalone
    from edgetvm.face.calibration import face_calibration
    from edgetvm.face.networks import network

    source, shapes = model_source(name)
    data = {}
    if name == "sface":
        data["crops"], _ = held_out_faces(network("sface", "recognizer"))
    elif name == "retinaface":
        data["net"] = network("retinaface", "detector")
        _, data["images"] = held_out_faces(network("sface", "recognizer"))
    calibration = None
    if name != "mobilefacenet" and any(needs_calibration(c) for c in configs):
        role = "recognizer" if name == "sface" else "detector"
        calibration = face_calibration(network(name, role), (112, 112) if name == "sface" else (320, 320))
    elif name == "mobilefacenet":
        rng = np.random.default_rng(1)
        calibration = [rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32) for _ in range(8)]
    reference = edgetvm.compile(source, "host", input_shapes=shapes)
    rows = []
    for config in configs:
        options = dict(CONFIGS[config])
        options.pop("calibrate", None)
        if needs_calibration(config):
            # The sensitivity measurement runs the model (layers x candidate k) times: 4 faces suffice.
            sens = "max_error" in options.get("compress", {})
            options["calibration"] = calibration[:4] if sens else calibration
        compress = {**options.pop("compress", {}), "entropy": "huffman"}
        started = time.perf_counter()
        host = edgetvm.compile(source, "host", input_shapes=shapes, compress=compress, **options)
        row = {"model": name, "config": config, **accuracy(name, reference, host, data),
               "weight_bytes": host.report.details["compression"]["bytes"]}
        found = host.report.details.get("ClusterWeights") or {}
        row["k_per_layer"] = {layer["layer"]: layer["k"] for layer in found.get("layers", [])}
        # Where the bytes are: each clustered layer's coded size (indices and its tables or scales).
        row["coded_bytes_per_layer"] = {layer["layer"]: layer["coded_bytes"] for layer in found.get("layers", [])}
        row["kept"] = found.get("kept", [])
        if "output_error" in found:
            row["summed_output_error"] = found["output_error"]
        # The ARM build clusters as the host build chose (the measurement is the host's).
        if "max_error" in compress:
            compress = {"layers": row["k_per_layer"] or {"-": 4}, "entropy": "huffman",
                        "scaled": compress.get("scaled", False), "assign": compress.get("assign")}
        arm = edgetvm.compile(source, target, input_shapes=shapes, compress=compress, **options)
        row["optimize"] = arm.optimize
        with tempfile.TemporaryDirectory(prefix="edgetvm-bench-compression-") as tmp:
            build = build_standalone(arm.scheduled, arm.imported, arm.target, Path(tmp), name, weights=arm.weights,
                                     optimize=arm.optimize, codebooks=arm.codebooks)
            so = build.so
            row["standalone_so_bytes"] = so.stat().st_size
            # Everything but the stored weights: kernels, runtime, decoder, call table, ELF overhead.
            row["stored_weight_bytes"] = len(build.weights.blob)
            row["code_and_tables_bytes"] = row["standalone_so_bytes"] - row["stored_weight_bytes"]
            if instructions:
                row["inference_instructions"] = inference_instructions(arm, so)
            if decode_cost:
                row.update(decoding_instructions(arm, so, Path(tmp)))
        row["goal_bytes"] = GOALS[name]
        row["so_over_goal"] = round(row["standalone_so_bytes"] / GOALS[name], 3)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sface,retinaface,mobilefacenet")
    parser.add_argument("--configs", default="fp32,int8,k16,k256,int8-k16")
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--json", default=None)
    parser.add_argument("--instructions", action="store_true",
                        help="also count the guest instructions of one inference of the standalone .so (qemu)")
    parser.add_argument("--decode-cost", action="store_true",
                        help="also count the guest instructions of decoding at load against one inference (qemu)")
    args = parser.parse_args()
    rows = [row for name in args.models.split(",")
            for row in measure(name, args.configs.split(","), args.target, args.decode_cost, args.instructions)]
    text = json.dumps({"target": args.target, "goals_bytes": GOALS, "rows": rows}, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
