"""Five captions per scene, written from its facts in varied styles, as RS caption corpora read.

Every word choice is one draw from the scene's generator, after its objects are placed.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .scene import (
    Archetype,
    LandCover,
    Layout,
    LinearFeature,
    ObjectKind,
    ObjectSite,
    PlacedObjects,
    StructureKind,
    choose,
)

CAPTIONS_PER_IMAGE = 5
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The nouns each object kind may be called (plurals add an "s").
NOUNS: dict[ObjectKind, list[str]] = {
    ObjectKind.PLANE: ["plane", "airplane"],
    ObjectKind.SHIP: ["ship", "boat"],
    ObjectKind.CAR: ["car", "vehicle"],
    ObjectKind.TANK: ["storage tank", "oil tank", "tank"],
}
LAND_PHRASES: dict[LandCover, list[str]] = {
    LandCover.FARMLAND: ["farmland", "green farmland", "some farmland", "fields", "cultivated fields"],
    LandCover.FOREST: ["a forest", "dense trees", "lush green trees", "the forest", "woods"],
    LandCover.DESERT: ["the desert", "bare yellow sand", "a desert", "bare land"],
    LandCover.GRASSLAND: ["a green meadow", "grassland", "green grass", "a piece of grassland"],
    LandCover.DENSE_RESIDENTIAL: [
        "a dense residential area",
        "many densely arranged houses",
        "dense houses",
        "a crowded residential area",
    ],
    LandCover.SPARSE_RESIDENTIAL: [
        "a sparse residential area",
        "scattered houses",
        "some sparse houses with trees",
        "houses among green trees",
    ],
}
SMALL_FIELD_PHRASES = ["dense farmland", "many small fields", "farmland divided into small plots"]
SCENE_PHRASES: dict[Archetype, str] = {
    Archetype.AIRPORT: "an airport",
    Archetype.HARBOUR: "a harbour",
    Archetype.RIVER: "a river",
    Archetype.RESIDENTIAL: "a residential area",
    Archetype.INDUSTRIAL: "an industrial area",
    Archetype.RURAL: "a rural area",
    Archetype.LAKE: "a lake",
}
# Features a structure may be said to be near, in order of preference.
LANDMARKS = (LinearFeature.RUNWAY, LinearFeature.RIVER, LinearFeature.ROAD, LinearFeature.LAKE)


class SentenceStyle(IntEnum):
    """How a sentence about small objects is phrased."""

    PLAIN = 0  # "two planes are parked on the apron"
    THERE_ARE = 1  # "there are two planes parked on the apron"
    SURROUNDED = 2  # "... surrounded by farmland"
    SCENE_WITH = 3  # "an airport with two planes ..."
    WE_CAN_SEE = 4  # "we can see two planes ..."


def count_phrase(count: int, rng: np.random.Generator) -> str:
    """A number word; "many"-like words from ten on, as annotators write."""
    if count >= 10:
        if count >= 12:
            return choose(rng, ["many", "lots of", "a lot of", "dozens of"])
        return choose(rng, ["many", "ten or more"])
    if count == 1:
        return choose(rng, ["a", "one"])
    return NUMBER_WORDS[count]


def object_phrase(placed: PlacedObjects, rng: np.random.Generator) -> str:
    """ "three white planes", "two red cars and one blue car", or without colours."""
    noun = choose(rng, NOUNS[placed.kind])
    plural = noun + "s"
    colours = placed.colours
    distinct = sorted(set(colours), key=colours.index)
    with_colours = bool(rng.random() < 0.75)
    if not with_colours or placed.count >= 12:
        return f"{count_phrase(placed.count, rng)} {noun if placed.count == 1 else plural}"
    if len(distinct) == 1:
        return f"{count_phrase(placed.count, rng)} {distinct[0]} {noun if placed.count == 1 else plural}"
    parts = []
    for colour in distinct:
        count = colours.count(colour)
        parts.append(f"{count_phrase(count, rng)} {colour} {noun if count == 1 else plural}")
    return " and ".join(parts)


def site_phrase(placed: PlacedObjects, layout: Layout, rng: np.random.Generator) -> str:
    """Where the objects are, in words that fit the layout."""
    has_buildings = layout.has_structure(StructureKind.BUILDINGS)
    options: list[str]
    if placed.kind is ObjectKind.PLANE:
        options = [
            "parked beside the runway",
            "parked on the apron",
            "lined up next to the taxiway",
            "parked near the runway",
        ]
        if has_buildings:
            options.append("parked near the terminal")
    elif placed.kind is ObjectKind.TANK:
        options = ["in the tank farm", "arranged neatly in the tank farm", "standing in the tank farm"]
        if layout.has_feature(LinearFeature.ROAD):
            options.append("standing near the road")
    elif placed.kind is ObjectKind.SHIP:
        if placed.site is ObjectSite.DOCKED:
            options = [
                "docked at the harbour",
                "moored beside the pier",
                "berthed along the piers",
                "docked in the port",
            ]
        else:
            water = placed.site.value
            options = [f"sailing on the {water}", f"on the {water}", f"moving on the {water}"]
            if placed.site is ObjectSite.SEA:
                options.append("sailing on the blue sea")
    elif placed.site is ObjectSite.PARKING_LOT:
        options = ["parked in the parking lot", "in the parking lot"]
        if has_buildings:
            options.append("parked near the buildings")
    else:
        options = ["driving on the road", "on the road", "running along the road"]
        if layout.has_feature(LinearFeature.BRIDGE):
            options.append("crossing the bridge")
    return choose(rng, options)


def land_phrase(layout: Layout, rng: np.random.Generator, after_buildings: bool = False) -> str:
    """A noun phrase for the land cover; ``after_buildings`` avoids house phrases after "buildings in"."""
    if after_buildings and layout.land_cover.is_residential:
        density = "dense" if layout.land_cover is LandCover.DENSE_RESIDENTIAL else "sparse"
        return choose(rng, [f"a {density} residential area", "the residential area"])
    options = list(LAND_PHRASES[layout.land_cover])
    if layout.land_cover is LandCover.FARMLAND and layout.dense:
        options += SMALL_FIELD_PHRASES
    return choose(rng, options)


def layout_sentence(layout: Layout, rng: np.random.Generator) -> str:
    """A sentence about the large layout only."""
    land = land_phrase(layout, rng)
    options: list[str] = []
    if layout.has_feature(LinearFeature.RUNWAY):
        options += [
            f"a long runway lies in {land}",
            f"a runway with a taxiway crosses {land}",
            f"an airport runway is surrounded by {land}",
            f"this is an airport beside {land}",
        ]
    if layout.has_feature(LinearFeature.RIVER):
        options += [
            f"a river crosses {land}",
            f"a winding river runs through {land}",
            f"a river flows through {land}",
            f"there is a river in {land}",
        ]
        if layout.has_feature(LinearFeature.BRIDGE):
            options += [f"a bridge crosses the river in {land}", "a road crosses the river over a bridge"]
    if layout.has_feature(LinearFeature.COASTLINE):
        options += [
            f"the coastline separates the sea from {land}",
            f"the sea is next to {land}",
            f"a long coastline runs along {land}",
        ]
    if layout.has_feature(LinearFeature.LAKE):
        options += [f"a lake is surrounded by {land}", f"there is a blue lake in {land}"]
    if layout.has_feature(LinearFeature.TWO_ROADS):
        options += [f"two roads cross in {land}", f"two straight roads go through {land}"]
    elif layout.has_feature(LinearFeature.ROAD):
        options += [f"a road goes through {land}", f"a straight road crosses {land}", f"a road passes through {land}"]
    if not options:
        options += [f"this is {land}", f"it is a scene of {land}"]
    return choose(rng, options)


def nearby_landmark(layout: Layout) -> LinearFeature | None:
    """The first of runway, river, road (one or two), lake that the layout has."""
    for landmark in LANDMARKS:
        if layout.has_feature(landmark) or (
            landmark is LinearFeature.ROAD and layout.has_feature(LinearFeature.TWO_ROADS)
        ):
            return landmark
    return None


def structure_sentence(layout: Layout, rng: np.random.Generator) -> str | None:
    """A sentence about one mid-scale structure (None when the layout has none)."""
    if not layout.structures:
        return None
    structure = choose(rng, layout.structures)
    kind = structure.kind
    land = land_phrase(layout, rng, after_buildings=True)
    landmark = nearby_landmark(layout)
    if kind is StructureKind.BUILDINGS:
        assert structure.building_count is not None
        how_many = "several" if structure.building_count > 2 else "two"
        options = [
            f"{how_many} {structure.roof_colour} buildings stand in {land}",
            f"there are {how_many} buildings in {land}",
            f"some buildings are located in {land}",
        ]
        if landmark:
            options.append(f"{how_many} buildings are near the {landmark}")
    elif kind is StructureKind.HARBOUR:
        assert structure.pier_count is not None
        options = [
            f"a harbour with {NUMBER_WORDS[structure.pier_count]} piers is on the coast",
            "there is a port with several piers",
            f"a harbour is built on the coast next to {land}",
        ]
    elif kind is StructureKind.TANK_FARM:
        options = [
            f"a tank farm is located in {land}",
            "there is a tank farm with round foundations",
            f"a tank farm is surrounded by {land}",
        ]
    elif kind is StructureKind.PARKING_LOT:
        options = [
            f"there is a parking lot in {land}",
            "a parking lot is next to the buildings"
            if layout.has_structure(StructureKind.BUILDINGS)
            else f"a parking lot lies in {land}",
        ]
    else:  # sports fields
        options = [f"there is a {kind} in {land}", f"a {kind} is surrounded by {land}"]
        if landmark:
            options.append(f"a {kind} is near the {landmark}")
    return choose(rng, options)


def verb_be(noun_phrase: str, count: int) -> str:
    return "is" if count == 1 and " and " not in noun_phrase else "are"


def object_sentence(placed: PlacedObjects, layout: Layout, style: SentenceStyle, rng: np.random.Generator) -> str:
    """A sentence stating how many objects of one kind (usually which colours) are where."""
    objects = object_phrase(placed, rng)
    be = verb_be(objects, placed.count)
    where = site_phrase(placed, layout, rng)
    if style is SentenceStyle.PLAIN:
        return f"{objects} {be} {where}"
    if style is SentenceStyle.THERE_ARE:
        return f"there {be} {objects} {where}"
    if style is SentenceStyle.SURROUNDED:
        return f"{objects} {be} {where} surrounded by {land_phrase(layout, rng)}"
    if style is SentenceStyle.SCENE_WITH:
        scene = SCENE_PHRASES[layout.archetype]
        if scene.split()[-1] in where:  # "a lake with two boats on the lake"
            return f"{scene} with {objects}"
        return f"{scene} with {objects} {where}"
    return f"we can see {objects} {where}"


def random_style(rng: np.random.Generator, low: int, high: int) -> SentenceStyle:
    """A style drawn uniformly from ``SentenceStyle(low)`` up to (not including) ``high``."""
    return SentenceStyle(int(rng.integers(low, high)))


def write_captions(layout: Layout, objects: list[PlacedObjects], rng: np.random.Generator) -> list[str]:
    """Five captions mixing large-layout, structure and small-object facts, in varied styles.

    With small objects present, at least three captions state their count (and usually
    colour), one describes the large layout only, and one mixes the layout with objects.
    """
    captions: list[str] = []
    if objects:
        main = objects[0]
        other = objects[1] if len(objects) > 1 else None
        captions.append(object_sentence(main, layout, random_style(rng, 0, 2), rng))
        captions.append(layout_sentence(layout, rng))
        captions.append(object_sentence(main, layout, random_style(rng, 2, 5), rng))
        if other is not None and rng.random() < 0.7:
            others = object_phrase(other, rng)
            scene = layout_sentence(layout, rng)
            captions.append(f"{scene} and {others} {verb_be(others, other.count)} {site_phrase(other, layout, rng)}")
        else:
            scene = layout_sentence(layout, rng)
            captions.append(f"{scene} with {object_phrase(main, rng)}")
        fifth = structure_sentence(layout, rng) if rng.random() < 0.5 else None
        captions.append(fifth or object_sentence(main, layout, random_style(rng, 0, 5), rng))
    else:
        captions.append(layout_sentence(layout, rng))
        while len(captions) < CAPTIONS_PER_IMAGE:
            captions.append(structure_sentence(layout, rng) or layout_sentence(layout, rng))
    return [" ".join(caption.split()) + " ." for caption in captions[:CAPTIONS_PER_IMAGE]]
