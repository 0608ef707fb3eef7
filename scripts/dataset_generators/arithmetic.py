"""Arithmetic set: multi-step word problems in the style of GSM8K, with verified answers.

Each family draws numbers so that every intermediate result is a positive whole number, writes
the question, a worked solution whose lines each contain one checked equation ("3 * 12 = 36"),
and the expression the answer comes from. Rows: ``{"prompt", "response", "answer",
"expression", "family"}``; the response ends with "The answer is: N".
"""

from __future__ import annotations

import random

from lab.datasets.arithmetic import answer_line, safe_eval

NAMES = [
    ("Maya", "she"), ("Liam", "he"), ("Aisha", "she"), ("Kenji", "he"), ("Sofia", "she"),
    ("Mateo", "he"), ("Priya", "she"), ("Noah", "he"), ("Amara", "she"), ("Omar", "he"),
    ("Elena", "she"), ("Tomasz", "he"), ("Zainab", "she"), ("Lucas", "he"), ("Mei", "she"),
    ("Kwame", "he"), ("Ingrid", "she"), ("Ravi", "he"), ("Chloe", "she"), ("Diego", "he"),
    ("Hana", "she"), ("Samuel", "he"), ("Fatima", "she"), ("Jonas", "he"),
]  # fmt: skip
ITEMS = [
    "notebooks", "sandwiches", "movie tickets", "bags of rice", "pairs of socks", "candles",
    "mugs", "plants", "comic books", "boxes of tea", "bus passes", "jars of honey",
]  # fmt: skip
BAKED = ["muffins", "cookies", "rolls", "cupcakes", "pretzels", "scones"]
COLLECT = ["stickers", "marbles", "trading cards", "stamps", "beads", "seashells"]
THINGS = ["a bike helmet", "a video game", "a pair of boots", "a guitar strap", "a backpack"]
RELS = ["a grandparent", "an aunt", "a neighbor", "an uncle", "a cousin"]
CROPS = ["tomato", "pepper", "bean", "cucumber", "squash"]
SALE = ["jacket", "lamp", "chair", "suitcase", "rug", "kettle"]
FRUIT = ["apples", "oranges", "pears", "lemons", "peaches"]


def _person(r: random.Random) -> tuple[str, str, str]:
    name, p = r.choice(NAMES)
    return name, p, "her" if p == "she" else "his"


def _change(r):
    n, p, _ = _person(r)
    (i1, i2), n1, p1, n2, p2 = (
        r.sample(ITEMS, 2),
        r.randint(2, 6),
        r.randint(2, 15),
        r.randint(2, 6),
        r.randint(2, 15),
    )
    a, b = n1 * p1, n2 * p2
    c = a + b
    bill = next(x for x in (20, 50, 100, 200) if x > c)
    q = f"{n} buys {n1} {i1} for ${p1} each and {n2} {i2} for ${p2} each. {p.capitalize()} pays with a ${bill} bill. How much change does {p} get, in dollars?"
    lines = [f"The {i1} cost {n1} * {p1} = {a} dollars.", f"The {i2} cost {n2} * {p2} = {b} dollars.",
             f"Together they cost {a} + {b} = {c} dollars.", f"The change is {bill} - {c} = {bill - c} dollars."]  # fmt: skip
    return q, lines, f"{bill} - ({n1} * {p1} + {n2} * {p2})"


def _savings(r):
    n, p, _ = _person(r)
    s, w, g = r.randint(3, 25), r.randint(3, 12), r.randint(5, 40)
    a = s * w
    x = r.randint(1, a - 1)
    q = f"{n} saves ${s} every week for {w} weeks. Then {p} spends ${x} on {r.choice(THINGS)} and gets ${g} from {r.choice(RELS)}. How many dollars does {p} have now?"
    lines = [f"{n} saves {s} * {w} = {a} dollars.", f"After shopping {p} has {a} - {x} = {a - x} dollars.",
             f"With the gift {p} has {a - x} + {g} = {a - x + g} dollars."]  # fmt: skip
    return q, lines, f"{s} * {w} - {x} + {g}"


def _bakery(r):
    _, p, _ = _person(r)
    item, t, k = r.choice(BAKED), r.randint(2, 9), r.randint(6, 24)
    a = t * k
    sold = r.randint(1, a - 2)
    g = r.randint(1, a - sold - 1)
    q = f"A baker makes {t} trays of {item} with {k} on each tray. The bakery sells {sold} of them and gives away {g}. How many {item} are left?"
    lines = [f"The baker makes {t} * {k} = {a} {item}.", f"After the sales there are {a} - {sold} = {a - sold} left.",
             f"After giving some away there are {a - sold} - {g} = {a - sold - g} left."]  # fmt: skip
    return q, lines, f"{t} * {k} - {sold} - {g}"


def _reading(r):
    n, p, _ = _person(r)
    p1, d1, p2, d2 = r.randint(5, 40), r.randint(2, 7), r.randint(5, 40), r.randint(2, 7)
    a, b = p1 * d1, p2 * d2
    c = a + b
    total = c + r.randint(10, 200)
    q = f"A book has {total} pages. {n} reads {p1} pages a day for {d1} days, then {p2} pages a day for {d2} days. How many pages are left to read?"
    lines = [f"First {p} reads {p1} * {d1} = {a} pages.", f"Then {p} reads {p2} * {d2} = {b} pages.",
             f"In all {p} reads {a} + {b} = {c} pages.", f"There are {total} - {c} = {total - c} pages left."]  # fmt: skip
    return q, lines, f"{total} - ({p1} * {d1} + {p2} * {d2})"


def _train(r):
    v1, h1, v2, h2 = r.randint(4, 16) * 10, r.randint(2, 6), r.randint(4, 16) * 10, r.randint(1, 5)
    a, b = v1 * h1, v2 * h2
    q = f"A train travels at {v1} km per hour for {h1} hours and then at {v2} km per hour for {h2} hours. How many kilometers does it travel in all?"
    lines = [f"In the first part it travels {v1} * {h1} = {a} km.", f"In the second part it travels {v2} * {h2} = {b} km.",
             f"In all it travels {a} + {b} = {a + b} km."]  # fmt: skip
    return q, lines, f"{v1} * {h1} + {v2} * {h2}"


def _sharing(r):
    n, p, _ = _person(r)
    item = r.choice(COLLECT)
    while True:
        k, each, m, s = r.randint(2, 8), r.randint(3, 20), r.randint(2, 6), r.randint(3, 12)
        have = k * each - m * s
        if have > 0:
            break
    a = m * s
    q = f"{n} has {have} {item} and buys {m} packs with {s} {item} in each. {p.capitalize()} shares all of them equally among {k} friends. How many {item} does each friend get?"
    lines = [f"The packs hold {m} * {s} = {a} {item}.", f"{n} then has {have} + {a} = {have + a} {item}.",
             f"Each friend gets {have + a} / {k} = {each} {item}."]  # fmt: skip
    return q, lines, f"({have} + {m} * {s}) / {k}"


def _discount(r):
    n, _, _ = _person(r)
    item, price, pct, k = (
        r.choice(SALE),
        r.randint(1, 15) * 20,
        r.choice([10, 15, 20, 25, 30, 40, 50]),
        r.randint(2, 5),
    )
    d = price * pct // 100
    q = f"A {item} costs ${price}. This week it is {pct}% off. How many dollars does {n} pay for {k} of them?"
    lines = [f"The discount is {price} * {pct} / 100 = {d} dollars.", f"The sale price is {price} - {d} = {price - d} dollars.",
             f"For {k} of them {n} pays {price - d} * {k} = {(price - d) * k} dollars."]  # fmt: skip
    return q, lines, f"({price} - {price} * {pct} / 100) * {k}"


def _garden(r):
    n, _, _ = _person(r)
    crop, rows, k, t = r.choice(CROPS), r.randint(2, 8), r.randint(3, 12), r.randint(2, 9)
    a = rows * k
    f = r.randint(1, a - 1)
    q = f"{n} plants {rows} rows of {crop} plants with {k} plants in each row. {f} of the plants do not survive, and each other plant gives {t} {crop}s. How many {crop}s does {n} harvest?"
    lines = [f"{n} plants {rows} * {k} = {a} plants.", f"{a} - {f} = {a - f} plants survive.",
             f"They give {a - f} * {t} = {(a - f) * t} {crop}s."]  # fmt: skip
    return q, lines, f"({rows} * {k} - {f}) * {t}"


def _ages(r):
    n, _, poss = _person(r)
    a, d, y = r.randint(4, 40), r.randint(1, 15), r.randint(2, 20)
    b = a + d
    sib = r.choice(["brother", "sister", "cousin"])
    q = f"{n} is {a} years old. {poss.capitalize()} {sib} is {d} years older. In {y} years, what will the sum of their ages be?"
    lines = [f"The {sib} is {a} + {d} = {b} years old.", f"Their ages add up to {a} + {b} = {a + b} now.",
             f"Each gets {y} years older, which adds {y} * 2 = {2 * y} years.", f"The sum will be {a + b} + {2 * y} = {a + b + 2 * y}."]  # fmt: skip
    return q, lines, f"{a} + ({a} + {d}) + {y} * 2"


def _wages(r):
    n, p, _ = _person(r)
    w, h, days, h2 = r.randint(9, 30), r.randint(3, 9), r.randint(2, 5), r.randint(2, 8)
    a = h * days
    q = f"{n} earns ${w} an hour. This week {p} works {h} hours a day for {days} days and {h2} hours on Sunday. How many dollars does {p} earn this week?"
    lines = [f"On the weekdays {p} works {h} * {days} = {a} hours.", f"With Sunday that is {a} + {h2} = {a + h2} hours.",
             f"{p.capitalize()} earns {a + h2} * {w} = {(a + h2) * w} dollars."]  # fmt: skip
    return q, lines, f"({h} * {days} + {h2}) * {w}"


def _fruit(r):
    fruit, boxes, k, m = r.choice(FRUIT), r.randint(3, 12), r.randint(10, 40), r.randint(2, 3)
    a = boxes * k
    s = r.randint(1, a // (m + 1))
    times = {2: "twice", 3: "three times"}[m]
    if s * (m + 1) >= a:
        s = max(1, s - 1)
    q = f"A shop has {boxes} boxes of {fruit} with {k} {fruit} in each box. It sells {s} {fruit} in the morning and {times} as many in the afternoon. How many {fruit} are left?"
    lines = [f"The shop has {boxes} * {k} = {a} {fruit}.", f"In the afternoon it sells {s} * {m} = {s * m} {fruit}.",
             f"It sells {s} + {s * m} = {s + s * m} {fruit} in all.", f"There are {a} - {s + s * m} = {a - s - s * m} {fruit} left."]  # fmt: skip
    return q, lines, f"{boxes} * {k} - ({s} + {s} * {m})"


def _teams(r):
    while True:
        c, s, t = r.randint(2, 8), r.randint(15, 32), r.randint(3, 8)
        total = c * s
        xs = [x for x in range(1, 11) if (total - x) % t == 0]
        if xs:
            x = r.choice(xs)
            break
    q = f"A school has {c} classes with {s} students in each class. {x} students are absent today, and the rest are split into teams of {t}. How many teams are there?"
    lines = [f"There are {c} * {s} = {total} students.", f"Today {total} - {x} = {total - x} students are present.",
             f"They make {total - x} / {t} = {(total - x) // t} teams."]  # fmt: skip
    return q, lines, f"({c} * {s} - {x}) / {t}"


def _fuel(r):
    litres, km, price = r.randint(4, 12), r.randint(2, 9) * 100, r.randint(2, 3)
    a = km // 100
    q = f"A car uses {litres} liters of fuel for every 100 km. Fuel costs ${price} per liter. How many dollars does the fuel for a {km} km trip cost?"
    lines = [f"The trip is {km} / 100 = {a} hundreds of kilometers.", f"The car uses {a} * {litres} = {a * litres} liters.",
             f"The fuel costs {a * litres} * {price} = {a * litres * price} dollars."]  # fmt: skip
    return q, lines, f"{km} / 100 * {litres} * {price}"


def _recipe(r):
    n, p, _ = _person(r)
    cups, serv, mult = r.randint(2, 6), r.choice([2, 3, 4, 6]), r.randint(2, 5)
    total = cups * mult
    have = r.randint(1, total - 1)
    q = f"A recipe needs {cups} cups of flour for {serv} servings. {n} wants to make {serv * mult} servings and has {have} cups of flour. How many more cups does {p} need?"
    lines = [f"{serv * mult} servings is {serv * mult} / {serv} = {mult} batches.", f"That needs {mult} * {cups} = {total} cups.",
             f"{n} needs {total} - {have} = {total - have} more cups."]  # fmt: skip
    return q, lines, f"{serv * mult} / {serv} * {cups} - {have}"


def _fence(r):
    length, width, cost = r.randint(5, 40), r.randint(3, 30), r.randint(2, 15)
    a = length + width
    q = f"A garden is {length} meters long and {width} meters wide. Fencing costs ${cost} per meter. How many dollars does it cost to fence the whole garden?"
    lines = [f"One length and one width make {length} + {width} = {a} meters.", f"The whole fence is {a} * 2 = {2 * a} meters.",
             f"It costs {2 * a} * {cost} = {2 * a * cost} dollars."]  # fmt: skip
    return q, lines, f"({length} + {width}) * 2 * {cost}"


def _tickets(r):
    na, pa, nc, pc = r.randint(10, 90), r.randint(8, 20), r.randint(5, 60), r.randint(3, 9)
    a, b = na * pa, nc * pc
    cost = r.randint(20, a + b - 1)
    q = f"A small theater sells {na} adult tickets at ${pa} each and {nc} child tickets at ${pc} each. The show costs ${cost} to put on. How many dollars of profit does the theater make?"
    lines = [f"Adult tickets bring in {na} * {pa} = {a} dollars.", f"Child tickets bring in {nc} * {pc} = {b} dollars.",
             f"The total is {a} + {b} = {a + b} dollars.", f"The profit is {a + b} - {cost} = {a + b - cost} dollars."]  # fmt: skip
    return q, lines, f"{na} * {pa} + {nc} * {pc} - {cost}"


FAMILIES = {f.__name__.lstrip("_"): f for f in (
    _change, _savings, _bakery, _reading, _train, _sharing, _discount, _garden,
    _ages, _wages, _fruit, _teams, _fuel, _recipe, _fence, _tickets,
)}  # fmt: skip


def make_arithmetic(seed: int = 4321, n_train: int = 2000, n_test: int = 300) -> dict:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    names = list(FAMILIES)
    while len(rows) < n_train + n_test:
        family = names[len(rows) % len(names)]
        question, lines, expr = FAMILIES[family](rng)
        if question in seen:
            continue
        value = safe_eval(expr)
        if value != int(value) or value < 0:  # a generator bug, never a data condition
            raise AssertionError(f"{family}: {expr} = {value} is not a whole number >= 0")
        answer = int(value)
        seen.add(question)
        response = "\n".join(lines + [answer_line(answer)])
        rows.append({"prompt": question, "response": response, "answer": answer,
                     "expression": expr, "family": family})  # fmt: skip
    rng.shuffle(rows)
    info = {
        "kind": "generation",
        "tasks": ["nlg"],
        "label_names": None,
        "description": "Multi-step arithmetic word problems (16 families) with worked solutions "
        "ending in 'The answer is: N'; exact match on the final number.",
    }
    return {"info": info, "train": rows[:n_train], "test": rows[n_train:]}
