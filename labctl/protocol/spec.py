"""The keys of the protocol format, as data: one table the loader checks keys against and
the JSON Schema (``labctl schema``) is generated from, so the two never disagree.

A field type is one of: ``string``, ``integer``, ``number``, ``boolean``, ``quantity``,
``quantity-or-param``, ``days``, ``time``, ``medium``, ``wells``, ``change``, ``enum:a|b``,
``obj:NAME``, ``map:NAME`` (names to objects), ``list:NAME`` (list of objects).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool = False
    doc: str = ""


def F(name: str, type_: str, doc: str = "", required: bool = False) -> Field:  # noqa: N802
    return Field(name, type_, required, doc)


OBJECTS: dict[str, tuple[Field, ...]] = {
    "protocol": (
        F("labctl", "integer", "format version; 1", True),
        F("id", "string", "slug, unique in a protocol library", True),
        F("title", "string", "human title", True),
        F("version", "string", "this file's version, e.g. 1.2.0", True),
        F("reference", "obj:reference", "the publication this protocol follows"),
        F("description", "string", "free text; say which values are placeholders"),
        F("phases", "list:phase", "labels for day ranges (display only)"),
        F("parameters", "map:parameter", "values a run may override"),
        F("compounds", "map:compound", "small molecules and growth factors as stocked", True),
        F("media", "map:medium", "base media as prepared", True),
        F("culture", "obj:culture", "culture vessel and working volume", True),
        F("timing", "obj:timing", "default feed time, window, time out of incubator"),
        F("schedule", "obj:schedule", "what happens on which day", True),
    ),
    "reference": (
        F("citation", "string", "e.g. Kriks S et al. Nature 480:547 (2011)", True),
        F("doi", "string", "DOI without the https://doi.org/ prefix"),
        F("url", "string", "a web address"),
    ),
    "phase": (
        F("name", "string", "", True),
        F("days", "days", "", True),
    ),
    "parameter": (
        F("default", "quantity", "value used unless the run sets one", True),
        F("min", "quantity", "smallest allowed value"),
        F("max", "quantity", "largest allowed value"),
        F("description", "string"),
    ),
    "compound": (
        F("stock", "quantity", "stock concentration, e.g. 10 mM or 100 ug/mL", True),
        F("solvent", "string", "e.g. DMSO, water, PBS + 0.1% BSA", True),
        F("mw", "quantity", "molar mass, e.g. 465.3 g/mol (needed to mix molar and mass units)"),
        F("storage", "string", "e.g. -20 degC, aliquots"),
        F("light_sensitive", "boolean"),
        F(
            "max_solvent",
            "quantity",
            "largest final fraction of its solvent in a medium, e.g. 0.1%",
        ),
    ),
    "medium": (
        F("description", "string"),
        F("shelf_life", "quantity", "e.g. 14 d"),
    ),
    "culture": (
        F("labware", "string", "an Opentrons labware load name", True),
        F("wells", "wells", "'all' or a list of wells, e.g. [A1, A2]"),
        F("volume", "quantity", "working volume per well, e.g. 2 mL", True),
        F("coating", "string", "e.g. Matrigel"),
    ),
    "timing": (
        F("feed_at", "time", "default time of day for feeds, HH:MM"),
        F("window", "quantity", "a feed may start this much before or after its time"),
        F("max_out_of_incubator", "quantity", "longest a plate may stay out of the incubator"),
    ),
    "schedule": (
        F("media", "list:media_rule", "which medium on which days", True),
        F("factors", "list:factor_rule", "compounds in the fresh medium"),
        F("feeds", "list:feed", "when and how the cells are fed", True),
        F("additions", "list:addition", "compounds spiked into the wells, no medium change"),
        F("environment", "list:environment", "incubator setpoints"),
        F("events", "list:event", "manual or device steps other than feeding"),
    ),
    "media_rule": (
        F("days", "days", "", True),
        F("medium", "medium", "a medium name, or a blend {A: 75%, B: 25%}", True),
    ),
    "factor_rule": (
        F("compound", "string", "a name from compounds", True),
        F("conc", "quantity-or-param", "final concentration in the fresh medium", True),
        F("days", "days", "", True),
    ),
    "feed": (
        F("days", "days", "", True),
        F("change", "change", "full | half | a fraction (0.3) | top-up | none", True),
        F("volume", "quantity-or-param", "volume added per well (default: culture volume)"),
        F("at", "time", "time of day, HH:MM (default: timing.feed_at)"),
        F("window", "quantity", "tolerance around the due time (default: timing.window)"),
        F("after_previous", "quantity", "due this long after the previous feed actually ran"),
        F("dose", "enum:fresh|well", "concentrations meant in the fresh medium or in the well"),
        F("wash", "obj:wash", "wash the wells before adding fresh medium"),
    ),
    "wash": (
        F("medium", "string", "a name from media", True),
        F("volume", "quantity-or-param", "per well (default: culture volume)"),
        F("times", "integer", "number of washes (default 1)"),
    ),
    "addition": (
        F("compound", "string", "a name from compounds", True),
        F("conc", "quantity-or-param", "final concentration in the well", True),
        F("days", "days", "", True),
        F("at", "time", "time of day, HH:MM (default: timing.feed_at)"),
        F("window", "quantity", "tolerance around the due time"),
        F("pulse", "quantity", "remove after this long: washed out, then a full change"),
        F("washout", "obj:washout", "how a pulse is washed out (default: 1 wash, day's medium)"),
    ),
    "washout": (
        F("medium", "string", "a name from media"),
        F("times", "integer", "number of washes"),
    ),
    "environment": (
        F("days", "days", "", True),
        F("temperature", "quantity", "e.g. 37 degC"),
        F("co2", "quantity", "e.g. 5%"),
        F("o2", "quantity", "e.g. 4% (hypoxia)"),
    ),
    "event": (
        F("days", "days", "one day, or a range: done once within it", True),
        F(
            "kind",
            "enum:replate|passage|seed|coat|sort|sample|image|freeze|wash|harvest|custom",
            "",
            True,
        ),
        F("title", "string", "", True),
        F("instructions", "string", "shown to the operator"),
        F("duration", "quantity", "how long it takes"),
        F("at", "time", "time of day, HH:MM (default: timing.feed_at)"),
        F("culture", "obj:culture_change", "vessel or volume from this event on"),
        F("qc", "list:qc", "values the operator records; a gate on the run"),
    ),
    "culture_change": (
        F("labware", "string", "an Opentrons labware load name"),
        F("wells", "wells"),
        F("volume", "quantity", "working volume per well"),
        F("coating", "string"),
    ),
    "qc": (
        F("measure", "string", "name of the value, e.g. FOXA2_LMX1A_pct", True),
        F("unit", "string", "unit of the value, e.g. %"),
        F("min", "number", "lowest passing value"),
        F("max", "number", "highest passing value"),
        F("on_fail", "enum:hold|abort|extend|note", "what a failing value does", True),
        F("by", "quantity", "with on_fail: extend, how far the rest of the run shifts"),
    ),
}


def fields(obj: str) -> dict[str, Field]:
    return {f.name: f for f in OBJECTS[obj]}
