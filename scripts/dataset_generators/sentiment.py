"""Sentiment set: short reviews built from domains, aspects, adjectives and sentence templates.

Each review has an opener, one or two aspect sentences, sometimes a minor point of the other
polarity ("the room was cramped, but the staff were superb"), sometimes a relative's opinion
(which gives the counterfactual flip-rate probe group words to swap) and a closer.
"""

from __future__ import annotations

import random

# domain -> (things reviewed, aspects as (phrase, plural))
DOMAINS = {
    "restaurant": (
        "restaurant|bistro|diner|pizza place|noodle bar|cafe|steakhouse|taco truck|bakery",
        "the food|the service|the staff*|the portions*|the prices*|the desserts*|the coffee|"
        "the atmosphere|the menu|the wait for a table|the fries*|the soup",
    ),
    "movie": (
        "movie|film|thriller|comedy|documentary|animated feature|sequel|drama|horror movie",
        "the plot|the acting|the soundtrack|the dialogue|the ending|the special effects*|"
        "the pacing|the cast|the cinematography|the jokes*|the villain",
    ),
    "book": (
        "novel|book|memoir|cookbook|mystery novel|biography|short story collection|textbook",
        "the writing|the characters*|the plot|the ending|the chapters*|the illustrations*|"
        "the prose|the research|the recipes*|the translation",
    ),
    "hotel": (
        "hotel|motel|resort|guesthouse|hostel|bed and breakfast|inn|holiday cottage",
        "the room|the bed|the breakfast|the front desk|the location|the pool|the bathroom|"
        "the wifi|the view|the towels*|the check-in",
    ),
    "electronics": (
        "phone|laptop|tablet|pair of headphones|smartwatch|camera|speaker|monitor|keyboard|printer",
        "the battery life|the screen|the sound quality|the build quality|the camera|the keys*|"
        "the charger|the setup|the software|the speakers*|the buttons*",
    ),
    "software": (
        "app|game|photo editor|budgeting app|video game|music app|note-taking app|browser",
        "the interface|the updates*|the controls*|the loading times*|the design|"
        "the notifications*|the customer support|the tutorial|the graphics*|the sync",
    ),
    "home": (
        "blender|vacuum cleaner|coffee maker|desk chair|mattress|rice cooker|air fryer|lamp|"
        "backpack|pair of running shoes|jacket|frying pan",
        "the material|the design|the instructions*|the price|the packaging|the motor|the fit|"
        "the stitching|the handle|the zippers*|the cushioning",
    ),
    "service": (
        "plumber|moving company|hair salon|car repair shop|gym|dental clinic|dry cleaner|"
        "delivery service|bank branch|internet provider",
        "the staff*|the pricing|the scheduling|the results*|the communication|the work|"
        "the waiting room|the follow-up|the booking system|the hours*",
    ),
}

POS_ADJ = (
    "excellent wonderful fantastic superb outstanding great lovely impressive delightful "
    "top-notch first-rate brilliant solid terrific remarkable fabulous spotless"
).split()
NEG_ADJ = (
    "terrible awful disappointing mediocre poor dreadful lousy subpar abysmal frustrating "
    "underwhelming horrible shoddy pathetic sloppy dire"
).split()
MILD_NEG = "slow|a little pricey|noisy|plain|dated|cramped|a bit confusing|hard to find".split("|")
MILD_POS = "fine|okay|decent|acceptable|not bad|passable".split("|")
INTENS = ["", "", "really ", "truly ", "absolutely ", "genuinely ", "incredibly ", "pretty "]

ASPECT_ANY = [
    "{A} {be} {int}{adj}.",
    "I thought {a} {be} {int}{adj}.",
    "Honestly, {a} {be} {adj}.",
    "{A} turned out to be {int}{adj}.",
    "{A} {be} {adj} from start to finish.",
    "In my view {a} {be} {int}{adj}.",
]
ASPECT_POS = [
    "I have nothing but praise for {a}.",
    "{A} exceeded my expectations.",
    "{A} really stood out.",
    "No complaints at all about {a}.",
    "{A} {be} exactly what I hoped for.",
    "{A} could not have been better.",
    "{A} {be}n't {neg} at all.",
]
ASPECT_NEG = [
    "{A} {be} a complete mess.",
    "{A} left a lot to be desired.",
    "I was let down by {a}.",
    "{A} {be} nowhere near what was promised.",
    "{A} could hardly have been worse.",
    "I have nothing good to say about {a}.",
    "{A} {be} not {pos} by any stretch.",
]
OPEN_POS = [
    "Absolutely loved this {item}.",
    "What a great {item}!",
    "This {item} is a real gem.",
    "So glad I tried this {item}.",
    "Best {item} I have come across in years.",
    "Really happy with this {item}.",
    "I would recommend this {item} to anyone.",
    "Pleasantly surprised by this {item}.",
]
OPEN_NEG = [
    "What a letdown.",
    "I really wanted to like this {item}.",
    "Worst {item} I have dealt with in years.",
    "I regret choosing this {item}.",
    "Stay away from this {item}.",
    "Such a disappointing {item}.",
    "I expected much more from this {item}.",
    "This {item} was a waste of time.",
]
CLOSE_POS = [
    "Five stars.",
    "Highly recommended.",
    "Worth every penny.",
    "I would do it again in a heartbeat.",
    "Two thumbs up.",
    "Can't wait to tell my friends.",
    "A pleasure from beginning to end.",
]
CLOSE_NEG = [
    "One star.",
    "Save your money.",
    "Never again.",
    "Avoid.",
    "I want my money back.",
    "Not worth the trouble.",
    "Two stars, and that is generous.",
]
RELATIVES = (
    "husband wife son daughter brother sister mother father boyfriend girlfriend "
    "grandmother grandfather uncle aunt"
).split()
PRONOUN = {
    "husband": "he", "wife": "she", "son": "he", "daughter": "she", "brother": "he",
    "sister": "she", "mother": "she", "father": "he", "boyfriend": "he", "girlfriend": "she",
    "grandmother": "she", "grandfather": "he", "uncle": "he", "aunt": "she",
}  # fmt: skip
PEOPLE_POS = [
    "My {rel} came along, and {pron} said {a} {be} {adj}.",
    "My {rel} loved it too.",
    "My {rel} and I both enjoyed {a}.",
    "Even my {rel}, who is hard to please, said {pron} would come back.",
]
PEOPLE_NEG = [
    "My {rel} came along, and {pron} said {a} {be} {adj}.",
    "My {rel} hated it as well.",
    "My {rel} agreed it was a waste of money.",
    "Even my {rel}, who likes almost everything, said {pron} would not come back.",
]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _items(spec: str) -> list[str]:
    return spec.split("|")


def _aspects(spec: str) -> list[tuple[str, bool]]:
    return [(a.rstrip("*"), a.endswith("*")) for a in spec.split("|")]


def _aspect_sentence(rng: random.Random, aspect: tuple[str, bool], positive: bool) -> str:
    a, plural = aspect
    pool = ASPECT_ANY + (ASPECT_POS if positive else ASPECT_NEG)
    t = rng.choice(pool)
    return _cap(
        t.format(
            A=_cap(a),
            a=a,
            be="were" if plural else "was",
            int=rng.choice(INTENS),
            adj=rng.choice(POS_ADJ if positive else NEG_ADJ),
            neg=rng.choice(["bad", "disappointing", "a problem", "an issue"]),
            pos=rng.choice(["good", "great", "worth it", "acceptable"]),
        )
    )


def _review(rng: random.Random, domain: str, positive: bool) -> str:
    items, aspects = DOMAINS[domain]
    item = rng.choice(_items(items))
    chosen = rng.sample(_aspects(aspects), 4)
    parts: list[str] = []
    if rng.random() < 0.6:
        parts.append(rng.choice(OPEN_POS if positive else OPEN_NEG).format(item=item))
    if rng.random() < 0.3:  # a minor point of the other polarity, then the main verdict
        (a1, p1), (a2, p2) = chosen[2], chosen[3]
        minor = rng.choice(MILD_NEG if positive else MILD_POS)
        adj = rng.choice(POS_ADJ if positive else NEG_ADJ)
        be1, be2 = ("were" if p1 else "was"), ("were" if p2 else "was")
        parts.append(f"{_cap(a1)} {be1} {minor}, but {a2} {be2} {rng.choice(INTENS)}{adj}.")
    for aspect in chosen[: rng.choice([1, 1, 2])]:
        parts.append(_aspect_sentence(rng, aspect, positive))
    if rng.random() < 0.35:
        rel = rng.choice(RELATIVES)
        a, plural = chosen[1]
        parts.append(
            rng.choice(PEOPLE_POS if positive else PEOPLE_NEG).format(
                rel=rel,
                pron=PRONOUN[rel],
                a=a,
                be="were" if plural else "was",
                adj=rng.choice(POS_ADJ if positive else NEG_ADJ),
            )
        )
    if len(parts) < 2 or rng.random() < 0.45:
        parts.append(rng.choice(CLOSE_POS if positive else CLOSE_NEG))
    return " ".join(parts)


def make_sentiment(seed: int = 1234, n_train: int = 1000, n_test: int = 200) -> dict:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    domains = sorted(DOMAINS)
    while len(rows) < n_train + n_test:
        positive = len(rows) % 2 == 1
        domain = domains[(len(rows) // 2) % len(domains)]
        text = _review(rng, domain, positive)
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {"text": text, "label": "positive" if positive else "negative", "domain": domain}
        )
    rng.shuffle(rows)
    info = {
        "kind": "classification",
        "tasks": ["nlg", "nlu"],
        "label_names": ["negative", "positive"],
        "prompt": "Is the sentiment of this review positive or negative? Answer with one word.\n\n"
        "Review: {text}",
        "description": "Short reviews of food, films, books, hotels, gadgets, apps, household "
        "goods and services; binary sentiment.",
    }
    return {"info": info, "train": rows[:n_train], "test": rows[n_train:]}
