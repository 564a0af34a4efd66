"""``rs-synth``: a procedurally generated multi-scale aerial caption corpus.

Why it exists: nobody reaches the Hub from here and a newcomer has no RS corpus yet, yet the
whole pipeline (training, evaluation, the quick start) needs image-caption pairs. The scenes
are built to exercise what MSA is about, content at several scales:

* **large layout** - land cover (farmland, forest, desert, grassland, water, dense or sparse
  residential) plus rivers, coastlines, lakes, roads and runways;
* **mid-scale structures** - building blocks, parking lots, sports fields, tank farms, harbours;
* **small objects with counts and colours** - planes, ships, cars, storage tanks.

Scenes come in *layout groups*: the siblings of a group share the same rendered large layout
and mid-scale structures and differ only in their small objects (how many, which colours,
where), and a whole group always lands in the same split. So captions such as "three white
planes are parked beside the runway" versus "five planes ..." can only be told apart at the
finest scale; the coarsest scale alone cannot solve retrieval.

The package follows the generator's stages: :mod:`.scene` (the vocabulary and records),
:mod:`.raster` (geometry and painting helpers), :mod:`.terrain` (land cover, water, roads),
:mod:`.structures`, :mod:`.layout` (one function per archetype), :mod:`.objects`,
:mod:`.captions` and :mod:`.writer` (scenes and the corpus on disk).

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded with
``[seed, group or image index, stream]`` and PNGs are written with fixed settings and no
metadata, so the same arguments give byte-identical files. Image ``i``'s pixels and captions
depend only on ``(seed, i, image_size, variants_per_layout)``.
"""

from .scene import SynthScene
from .writer import (
    GENERATOR_VERSION,
    SYNTH_DATASET_NAME,
    SYNTH_JSON_NAME,
    SceneRenderer,
    ensure_synth_corpus,
    generate_synth_corpus,
    render_scene,
)

__all__ = [
    "GENERATOR_VERSION",
    "SYNTH_DATASET_NAME",
    "SYNTH_JSON_NAME",
    "SceneRenderer",
    "SynthScene",
    "ensure_synth_corpus",
    "generate_synth_corpus",
    "render_scene",
]
