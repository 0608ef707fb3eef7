"""Topics set: short news snippets about invented countries, teams, companies and labs.

Four classes (world, sports, business, science), each from a dozen sentence templates filled
from word lists. Every place, team, company and person is made up, so no snippet states
anything about the real world. Some snippets quote a person with a gendered word or pronoun,
which the counterfactual flip-rate probe swaps.
"""

from __future__ import annotations

import random

COUNTRIES = "Valdoria Estrenia Marovia Kestland Orvania Talvania Zembria Corvelle Ishtara Norrland Pelagos Quorin".split()
CITIES = "Riverton|Lakeside|Northfield|Ashford|Port Ellis|Greyhaven|Millbrook|Stonebridge|Westmere|Fairhollow|Dunmore|Kingsport".split(
    "|"
)
MASCOTS = "Hawks Rovers Comets Bears Wolves Falcons Tigers Mariners Foxes Giants".split()
SPORTS = [
    ("football", "goals"),
    ("basketball", "points"),
    ("hockey", "goals"),
    ("rugby", "points"),
    ("handball", "goals"),
]
COMPETITIONS = (
    "league cup|national championship|regional final|spring tournament|continental cup".split("|")
)
INDIVIDUAL = [
    "marathon",
    "tennis open",
    "cycling tour",
    "swimming championship",
    "ski race",
    "chess olympiad",
]
FIRST = "Amira Jonas Lena Tariq Ines Marco Yuki Oskar Nadia Felix Rosa Emeka Clara Anton".split()
LAST = (
    "Varga Okafor Lindqvist Moreau Tanaka Petrov Alvarez Brandt Sato Kowalski Haddad Novak".split()
)
CO_A = "Norvik Altora Brightwell Kestrel Orin Meridian Sableford Tamsin Quillon Harrowgate".split()
CO_B = "Foods|Motors|Bank|Retail|Energy|Logistics|Airlines|Telecom|Pharma|Steel".split("|")
INSTITUTES = [
    "University of {c}",
    "{c} Institute of Technology",
    "{c} Marine Laboratory",
    "{c} Observatory",
    "{c} Medical School",
]
SPECIES = "frog|beetle|orchid|moth|lizard|freshwater snail|fern|bat".split("|")
HABITATS = "cloud forest|desert caves|mountain streams|coastal marshes|a volcanic island|the deep sea".split(
    "|"
)
FINDINGS = [
    "a protein that helps cells repair damaged DNA", "a bacterium that breaks down plastic bottles",
    "a cheaper catalyst for splitting water into hydrogen", "a battery material that charges in minutes",
    "a gene linked to drought tolerance in wheat", "a way to grow bone tissue on a printed scaffold",
    "a new class of antibiotics in soil samples", "a method that reads ancient scrolls without opening them",
]  # fmt: skip
SPACE = ["a planet orbiting a nearby red dwarf", "water ice in a crater near the lunar south pole",
         "a comet with an unusually long tail", "a burst of radio waves from a distant galaxy",
         "a pair of merging black holes"]  # fmt: skip
ISSUES = "fishing rights|river pollution|a shared railway|border crossings|refugee support|electricity exports|customs rules".split(
    "|"
)
PEOPLE = [("man", "he"), ("woman", "she")]
ROLES = ["prime minister", "president", "foreign minister", "mayor"]


def _person(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def _company(r: random.Random) -> str:
    return f"{r.choice(CO_A)} {r.choice(CO_B)}"


def _team(r: random.Random) -> str:
    return f"{r.choice(CITIES)} {r.choice(MASCOTS)}"


def _world(r: random.Random) -> str:
    c1, c2 = r.sample(COUNTRIES, 2)
    role = r.choice(ROLES)
    g, pron = r.choice(PEOPLE)
    t = r.randrange(10)
    if t == 0:
        return f"The {role} of {c1} met {c2}'s foreign minister to discuss {r.choice(ISSUES)}."
    if t == 1:
        return f"Voters in {c1} go to the polls on Sunday in a {r.choice(['general', 'regional', 'presidential'])} election that polls call too close to predict."
    if t == 2:
        return f"{c1} and {c2} signed an agreement on {r.choice(ISSUES)} after {r.randint(2, 14)} months of talks."
    if t == 3:
        return f"Parliament in {c1} voted {r.randint(120, 300)} to {r.randint(20, 119)} to approve a new {r.choice(['constitution', 'budget', 'climate law', 'voting law'])}."
    if t == 4:
        return f"Floods in northern {c1} forced {r.randint(2, 90) * 100} people from their homes, and {c2} sent rescue teams."
    if t == 5:
        return f"The new {role} of {c1}, a {g} who led the opposition for {r.randint(3, 12)} years, said {pron} would reopen the embassy in {c2}."
    if t == 6:
        return f"Diplomats from {c1} and {c2} agreed to a ceasefire along their disputed border."
    if t == 7:
        return f"{c1} recalled its ambassador from {c2} in a row over {r.choice(ISSUES)}."
    if t == 8:
        return f"Protesters filled the streets of the capital of {c1} to demand {r.choice(['early elections', 'lower food prices', 'a free press', 'an end to the curfew'])}."
    return f"The United Nations envoy to {c1} warned that talks with {c2} on {r.choice(ISSUES)} could collapse."


def _sports(r: random.Random) -> str:
    sport, unit = r.choice(SPORTS)
    t1, t2 = _team(r), _team(r)
    a, b = r.randint(1, 6), r.randint(0, 5)
    g, pron = r.choice(PEOPLE)
    t = r.randrange(9)
    if t == 0:
        return f"The {t1} beat the {t2} {max(a, b) + 1}-{min(a, b)} to reach the {r.choice(COMPETITIONS)} final."
    if t == 1:
        return f"{_person(r)} scored {r.randint(2, 40)} {unit} as the {t1} won their {sport} derby."
    if t == 2:
        return f"{_person(r)} won the {r.choice(INDIVIDUAL)} in {r.choice(CITIES)} in record time."
    if t == 3:
        return f"The {t1} sacked their coach after {r.randint(4, 12)} straight defeats in the {sport} {r.choice(['league', 'cup'])}."
    if t == 4:
        return f"The {t1} coach, a {g} in {r.choice(['his', 'her'])} first season, said {pron} was proud of the team's {r.choice(['defense', 'attack', 'fitness'])}."
    if t == 5:
        return f"A late goal gave the {t1} a {a}-{a} draw against the {t2} in front of {r.randint(8, 60)} thousand fans."
    if t == 6:
        return f"{_person(r)} signed a {r.randint(2, 5)}-year contract with the {t1} after leaving the {t2}."
    if t == 7:
        return f"The {sport} season opens on Friday with the {t1} hosting the {t2}."
    return f"{_person(r)} defended {r.choice(['his', 'her'])} title at the {r.choice(INDIVIDUAL)} despite an injury."


def _business(r: random.Random) -> str:
    co, co2 = _company(r), _company(r)
    pct = r.randint(2, 35)
    g, pron = r.choice(PEOPLE)
    t = r.randrange(9)
    if t == 0:
        return f"Shares in {co} {r.choice(['rose', 'fell'])} {pct}% after the company reported its quarterly earnings."
    if t == 1:
        return f"{co} agreed to buy {co2} for {r.randint(2, 90)} billion dollars in cash and stock."
    if t == 2:
        return f"The central bank of {r.choice(COUNTRIES)} {r.choice(['raised', 'cut'])} interest rates by {r.choice(['a quarter', 'half'])} of a point."
    if t == 3:
        return f"{co} will cut {r.randint(2, 90) * 100} jobs as sales {r.choice(['slow', 'fall', 'stall'])} in its home market."
    if t == 4:
        return f"The chief executive of {co}, a {g} who joined from {co2}, said {pron} expects profits to {r.choice(['double', 'recover', 'grow'])} next year."
    if t == 5:
        return f"Inflation in {r.choice(COUNTRIES)} slowed to {r.randint(2, 9)}.{r.randint(0, 9)}% as fuel prices eased."
    if t == 6:
        return f"{co} plans to list its shares on the {r.choice(CITIES)} stock exchange this {r.choice(['spring', 'autumn', 'summer'])}."
    if t == 7:
        return f"Retail sales rose {pct / 10:.1f}% last month, beating what economists expected."
    return f"{co} opened a new factory in {r.choice(CITIES)} that will employ {r.randint(2, 40) * 50} workers."


def _science(r: random.Random) -> str:
    inst = r.choice(INSTITUTES).format(c=r.choice(CITIES))
    g, pron = r.choice(PEOPLE)
    t = r.randrange(8)
    if t == 0:
        return f"Researchers at the {inst} discovered a new species of {r.choice(SPECIES)} in {r.choice(HABITATS)}."
    if t == 1:
        return f"Scientists at the {inst} report {r.choice(FINDINGS)}."
    if t == 2:
        return f"A telescope team at the {inst} spotted {r.choice(SPACE)}."
    if t == 3:
        return f"The lead author, a {g} at the {inst}, said {pron} hopes the study of {r.choice(SPECIES)}s in {r.choice(HABITATS)} will guide conservation."
    if t == 4:
        return f"A probe launched {r.randint(2, 11)} years ago sent back the first close images of {r.choice(['an icy moon', 'a distant asteroid', 'a comet nucleus'])}."
    if t == 5:
        return f"A clinical trial at the {inst} found that {r.choice(['a new vaccine', 'a gene therapy', 'a cheap generic drug'])} cut {r.choice(['hospital stays', 'relapses', 'infections'])} by {r.randint(10, 70)}%."
    if t == 6:
        return f"Physicists at the {inst} measured {r.choice(['the mass of a rare particle', 'the coldest temperature yet', 'a new state of matter'])} with record precision."
    return f"Climate researchers at the {inst} found that {r.choice(HABITATS)} are warming {r.randint(2, 4)} times faster than expected."


CLASSES = {"world": _world, "sports": _sports, "business": _business, "science": _science}


def make_topics(seed: int = 2468, per_class: int = 250, test_per_class: int = 50) -> dict:
    rng = random.Random(seed)
    seen: set[str] = set()
    train: list[dict] = []
    test: list[dict] = []
    for label, fn in CLASSES.items():
        rows: list[dict] = []
        while len(rows) < per_class:
            text = fn(rng)
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label})
        test += rows[:test_per_class]
        train += rows[test_per_class:]
    rng.shuffle(train)
    rng.shuffle(test)
    info = {
        "kind": "classification",
        "tasks": ["nlg", "nlu"],
        "label_names": list(CLASSES),
        "prompt": "Which topic is this news snippet about: world, sports, business or science? "
        "Answer with one word.\n\nSnippet: {text}",
        "description": "Short news snippets about invented places, teams, companies and labs; "
        "4 topics (world, sports, business, science).",
    }
    return {"info": info, "train": train, "test": test}
