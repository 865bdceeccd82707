"""Write the evaluation tasks that ship in mlxd (mlxd/data/tasks/*.jsonl), deterministically.

    python scripts/make_eval_tasks.py        # rewrites the four files; the same bytes each time

Every item was written for mlxd (facts as plain data below, arithmetic generated); see
mlxd/data/tasks/README for their licence. Multiple-choice distractors come from a seeded RNG.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "mlxd" / "data" / "tasks"

CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("the United Kingdom", "London"),
    ("Ireland", "Dublin"),
    ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"),
    ("Austria", "Vienna"),
    ("Switzerland", "Bern"),
    ("Poland", "Warsaw"),
    ("Czechia", "Prague"),
    ("Hungary", "Budapest"),
    ("Greece", "Athens"),
    ("Sweden", "Stockholm"),
    ("Norway", "Oslo"),
    ("Denmark", "Copenhagen"),
    ("Finland", "Helsinki"),
    ("Iceland", "Reykjavik"),
    ("Russia", "Moscow"),
    ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"),
    ("Turkey", "Ankara"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis Ababa"),
    ("Morocco", "Rabat"),
    ("South Africa", "Pretoria"),
    ("Ghana", "Accra"),
    ("Senegal", "Dakar"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("South Korea", "Seoul"),
    ("India", "New Delhi"),
    ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"),
    ("Malaysia", "Kuala Lumpur"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"),
    ("Israel", "Jerusalem"),
    ("Afghanistan", "Kabul"),
    ("Nepal", "Kathmandu"),
    ("Mongolia", "Ulaanbaatar"),
    ("Australia", "Canberra"),
    ("New Zealand", "Wellington"),
    ("Canada", "Ottawa"),
    ("the United States", "Washington"),
    ("Mexico", "Mexico City"),
    ("Cuba", "Havana"),
    ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"),
    ("Peru", "Lima"),
    ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"),
    ("Bolivia", "La Paz"),
    ("Jamaica", "Kingston"),
    ("Lebanon", "Beirut"),
    ("Syria", "Damascus"),
    ("Jordan", "Amman"),
    ("Qatar", "Doha"),
    ("Libya", "Tripoli"),
    ("Tunisia", "Tunis"),
    ("Algeria", "Algiers"),
    ("Sudan", "Khartoum"),
    ("Uganda", "Kampala"),
    ("Tanzania", "Dodoma"),
    ("Zimbabwe", "Harare"),
]

# (question, right answer, three wrong answers)
UNITS = [
    ("How many centimetres are in one metre?", "100", ["10", "1000", "60"]),
    ("How many millimetres are in one centimetre?", "10", ["100", "1000", "12"]),
    ("How many metres are in one kilometre?", "1000", ["100", "10", "10000"]),
    ("How many grams are in one kilogram?", "1000", ["100", "10", "60"]),
    ("How many millilitres are in one litre?", "1000", ["100", "10", "500"]),
    ("How many seconds are in one minute?", "60", ["100", "24", "12"]),
    ("How many minutes are in one hour?", "60", ["100", "24", "30"]),
    ("How many hours are in one day?", "24", ["12", "60", "7"]),
    ("How many days are in one week?", "7", ["5", "10", "30"]),
    ("How many months are in one year?", "12", ["10", "52", "365"]),
    ("How many days are in a leap year?", "366", ["365", "360", "364"]),
    ("How many weeks are in one year?", "52", ["12", "48", "100"]),
    ("How many years are in one century?", "100", ["10", "1000", "50"]),
    ("How many years are in one decade?", "10", ["100", "12", "5"]),
    ("How many inches are in one foot?", "12", ["10", "3", "36"]),
    ("How many feet are in one yard?", "3", ["12", "10", "5"]),
    ("How many ounces are in one pound?", "16", ["12", "10", "100"]),
    ("How many bits are in one byte?", "8", ["10", "16", "4"]),
    ("How many sides does a triangle have?", "3", ["4", "5", "6"]),
    ("How many sides does a square have?", "4", ["3", "5", "8"]),
    ("How many sides does a hexagon have?", "6", ["5", "8", "4"]),
    ("How many degrees are in a right angle?", "90", ["180", "45", "360"]),
    ("How many degrees are in a full circle?", "360", ["180", "90", "100"]),
    ("At what temperature in Celsius does water freeze?", "0", ["100", "32", "10"]),
    ("At what temperature in Celsius does water boil at sea level?", "100", ["0", "50", "212"]),
    ("What is the unit of electric current?", "ampere", ["volt", "ohm", "watt"]),
    ("What is the unit of electrical resistance?", "ohm", ["ampere", "volt", "joule"]),
    ("What is the unit of power?", "watt", ["newton", "metre", "second"]),
    ("What is the unit of force?", "newton", ["watt", "kelvin", "litre"]),
    ("What is the unit of energy?", "joule", ["metre", "ampere", "gram"]),
    ("What is the unit of frequency?", "hertz", ["newton", "ohm", "gram"]),
    ("What is the unit of electric potential?", "volt", ["hertz", "kilogram", "second"]),
    ("What is the base unit of length?", "metre", ["gram", "second", "litre"]),
    ("What is the base unit of mass?", "kilogram", ["metre", "second", "volt"]),
    ("What is the base unit of time?", "second", ["metre", "gram", "watt"]),
    ("What is the base unit of temperature?", "kelvin", ["joule", "newton", "metre"]),
    (
        "Which is longer, a metre or a centimetre?",
        "a metre",
        ["a centimetre", "they are equal", "neither"],
    ),
    (
        "Which is heavier, a kilogram or a gram?",
        "a kilogram",
        ["a gram", "they are equal", "neither"],
    ),
    ("Which is longer, an hour or a minute?", "an hour", ["a minute", "they are equal", "neither"]),
    ("Which is longer, a week or a day?", "a week", ["a day", "they are equal", "neither"]),
    ("How many centimetres are in two metres?", "200", ["20", "2000", "120"]),
    ("How many grams are in half a kilogram?", "500", ["50", "5000", "250"]),
    ("How many minutes are in two hours?", "120", ["60", "200", "100"]),
    ("How many seconds are in one hour?", "3600", ["600", "360", "6000"]),
    ("How many days are in two weeks?", "14", ["10", "20", "12"]),
    ("How many hours are in two days?", "48", ["24", "36", "72"]),
    ("How many metres are in three kilometres?", "3000", ["300", "30", "30000"]),
    ("How many millilitres are in two litres?", "2000", ["200", "20", "1200"]),
    ("How many months are in two years?", "24", ["12", "20", "36"]),
    ("How many legs does a spider have?", "8", ["6", "4", "10"]),
    ("How many legs does an insect have?", "6", ["8", "4", "10"]),
    ("How many players are on a football (soccer) team on the field?", "11", ["9", "7", "15"]),
    ("How many cents are in one dollar?", "100", ["10", "1000", "50"]),
    ("How many pennies are in one pound sterling?", "100", ["12", "20", "240"]),
    ("How many items are in a dozen?", "12", ["10", "6", "20"]),
    ("How many years are in one millennium?", "1000", ["100", "10", "10000"]),
    ("How many kilobytes are in one megabyte (decimal)?", "1000", ["100", "10", "8"]),
    ("How many days are in the month of September?", "30", ["31", "28", "29"]),
    ("How many days are in the month of January?", "31", ["30", "28", "29"]),
    ("How many planets orbit the Sun?", "8", ["9", "7", "12"]),
]

# (passage, question, right answer, three wrong answers): each written for mlxd
READING = [
    (
        "Mara planted tomatoes in May. By August the plants were taller than her little brother, and she picked a full basket every morning.",
        "What did Mara plant?",
        "tomatoes",
        ["roses", "apples", "potatoes"],
    ),
    (
        "The train to the coast left at nine. Tom arrived at the station at ten past nine, so he took the bus instead.",
        "How did Tom travel to the coast?",
        "by bus",
        ["by train", "by car", "on foot"],
    ),
    (
        "Lena keeps two cats and a dog. The cats sleep on the sofa; the dog sleeps by the door.",
        "Where does the dog sleep?",
        "by the door",
        ["on the sofa", "in the garden", "on the bed"],
    ),
    (
        "The library closes at six on weekdays and at noon on Saturdays. It is closed on Sundays.",
        "When does the library close on Saturdays?",
        "at noon",
        ["at six", "at nine", "it does not open"],
    ),
    (
        "Omar baked bread on Friday. It was so good that his neighbours asked for the recipe.",
        "What did Omar bake?",
        "bread",
        ["a cake", "cookies", "a pie"],
    ),
    (
        "The river froze in January, and the children skated on it every afternoon until the thaw in March.",
        "What did the children do on the river?",
        "they skated",
        ["they swam", "they fished", "they rowed"],
    ),
    (
        "Anna's bicycle is red, her sister's is blue, and their father rides a green one.",
        "What colour is Anna's bicycle?",
        "red",
        ["blue", "green", "yellow"],
    ),
    (
        "The meeting was moved from Tuesday to Thursday because the manager was ill.",
        "On which day is the meeting now?",
        "Thursday",
        ["Tuesday", "Monday", "Friday"],
    ),
    (
        "Sam wanted a window seat, but the plane was full, so he sat in the middle of the last row.",
        "Where did Sam sit?",
        "in the middle of the last row",
        ["by the window", "in the first row", "by the aisle"],
    ),
    (
        "The bakery sells croissants in the morning. By noon they are usually gone.",
        "When are the croissants usually sold out?",
        "by noon",
        ["by the evening", "at midnight", "at dawn"],
    ),
    (
        "Priya studied chemistry at university, but she now works as a pilot.",
        "What is Priya's job now?",
        "pilot",
        ["chemist", "teacher", "doctor"],
    ),
    (
        "The old lighthouse was painted white last summer. Before that it had red and white stripes.",
        "What colour is the lighthouse now?",
        "white",
        ["red", "striped", "blue"],
    ),
    (
        "Jonas forgot his umbrella at home, and it rained all afternoon, so he came back soaked.",
        "Why did Jonas get wet?",
        "he forgot his umbrella",
        ["he fell in a lake", "he went swimming", "he washed his car"],
    ),
    (
        "The village has one shop, one school and three churches.",
        "How many churches does the village have?",
        "three",
        ["one", "two", "four"],
    ),
    (
        "Eva ordered soup, but the waiter brought her a salad, which she ate anyway.",
        "What did Eva eat?",
        "a salad",
        ["soup", "pasta", "nothing"],
    ),
    (
        "The museum is free on the first Sunday of each month; on other days a ticket costs ten euros.",
        "When is the museum free?",
        "on the first Sunday of each month",
        ["every day", "on Mondays", "never"],
    ),
    (
        "Kofi's grandmother lives on a farm with forty sheep and one very old horse.",
        "How many sheep are on the farm?",
        "forty",
        ["four", "fourteen", "one"],
    ),
    (
        "When the power failed, Mei lit candles and finished her book by their light.",
        "What did Mei use for light?",
        "candles",
        ["a torch", "her phone", "the moon"],
    ),
    (
        "The bridge was closed for repairs, so the lorries had to drive twenty kilometres around the lake.",
        "Why did the lorries drive around the lake?",
        "the bridge was closed",
        ["the road was icy", "they were lost", "the lake was dry"],
    ),
    (
        "Lucas is older than Ben, and Ben is older than Mia.",
        "Who is the youngest?",
        "Mia",
        ["Lucas", "Ben", "they are the same age"],
    ),
    (
        "Nina put the keys in the blue drawer, then moved them to her coat pocket before leaving.",
        "Where are the keys now?",
        "in her coat pocket",
        ["in the blue drawer", "on the table", "in the car"],
    ),
    (
        "The concert started an hour late because the singer's flight was delayed.",
        "Why did the concert start late?",
        "the singer's flight was delayed",
        ["it rained", "the hall was locked", "nobody came"],
    ),
    (
        "Ravi grows beans, peas and carrots. The rabbits ate all the carrots this year.",
        "Which vegetable did the rabbits eat?",
        "carrots",
        ["beans", "peas", "lettuce"],
    ),
    (
        "The school trip went to the zoo in spring and to the mountains in autumn.",
        "Where did the school trip go in autumn?",
        "to the mountains",
        ["to the zoo", "to the sea", "to a museum"],
    ),
    (
        "Clara swims every morning before work and runs on Saturday afternoons.",
        "When does Clara run?",
        "on Saturday afternoons",
        ["every morning", "after work", "on Sundays"],
    ),
    (
        "The shop sold out of milk, so Felix bought orange juice for breakfast.",
        "What did Felix buy?",
        "orange juice",
        ["milk", "coffee", "tea"],
    ),
    (
        "Our neighbour's dog, Biscuit, is afraid of cats but loves children.",
        "What is Biscuit afraid of?",
        "cats",
        ["children", "water", "thunder"],
    ),
    (
        "After the storm, the garden fence lay flat and two trees had lost their branches.",
        "What happened to the fence?",
        "it lay flat",
        ["it was painted", "it grew taller", "it was sold"],
    ),
    (
        "Hugo reads the newspaper on paper, but his daughter reads the news on her phone.",
        "How does Hugo read the news?",
        "on paper",
        ["on his phone", "on a computer", "on the radio"],
    ),
    (
        "The recipe needs three eggs, but Ada had only two, so she added a spoon of yoghurt.",
        "How many eggs did Ada use?",
        "two",
        ["three", "one", "four"],
    ),
    (
        "The ferry crosses the bay twice a day: once at dawn and once at sunset.",
        "How often does the ferry cross the bay?",
        "twice a day",
        ["once a day", "every hour", "once a week"],
    ),
    (
        "Yusuf painted the kitchen yellow and the bedroom grey.",
        "What colour is the bedroom?",
        "grey",
        ["yellow", "white", "green"],
    ),
    (
        "The festival was cancelled this year, so the town held a small market instead.",
        "What did the town hold instead of the festival?",
        "a small market",
        ["a concert", "a race", "nothing"],
    ),
    (
        "Ingrid lost her glasses on the beach and found them a week later in her bag.",
        "Where did Ingrid find her glasses?",
        "in her bag",
        ["on the beach", "in the car", "at work"],
    ),
    (
        "The bus is faster than the tram, but the tram stops closer to Leo's house, so he takes the tram.",
        "Which does Leo take?",
        "the tram",
        ["the bus", "a taxi", "his bicycle"],
    ),
    (
        "Each morning the baker wakes at four, and the shop opens at seven.",
        "When does the shop open?",
        "at seven",
        ["at four", "at nine", "at noon"],
    ),
    (
        "Marta speaks Spanish at home, English at work and a little French on holiday.",
        "Which language does Marta speak at work?",
        "English",
        ["Spanish", "French", "German"],
    ),
    (
        "The cat knocked the vase off the shelf, and it broke into three pieces.",
        "What broke the vase?",
        "the cat",
        ["the wind", "a child", "the dog"],
    ),
    (
        "Pablo saved money for a year and bought a second-hand piano.",
        "What did Pablo buy?",
        "a piano",
        ["a car", "a guitar", "a bicycle"],
    ),
    (
        "The well in the square dried up in the hot summer, so people carried water from the river.",
        "Where did people get water?",
        "from the river",
        ["from the well", "from the shop", "from the rain"],
    ),
]


def choice_items(rng: random.Random, rows) -> list[dict]:
    items = []
    for row in rows:
        *head, right, wrong = row
        choices = [right, *wrong]
        rng.shuffle(choices)
        item = {"question": head[-1], "choices": choices, "answer": choices.index(right)}
        if len(head) == 2:
            item = {"context": head[0], **item}
        items.append(item)
    return items


def capitals(rng: random.Random) -> list[dict]:
    cities = [c for _, c in CAPITALS]
    rows = []
    for country, city in CAPITALS:
        wrong = rng.sample([c for c in cities if c != city], 3)
        rows.append((f"What is the capital of {country}?", city, wrong))
    return choice_items(rng, rows)


def arithmetic(rng: random.Random) -> list[dict]:
    items = []
    for i in range(120):
        op = ("+", "-", "*")[i % 3]
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
        else:
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            a, b = (a, b) if op == "+" or a >= b else (b, a)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        items.append(
            {"prompt": f"What is {a} {word} {b}? Answer with a number.", "answer": str(value)}
        )
    return items


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tasks = {
        "arithmetic": arithmetic(random.Random(1)),
        "capitals": capitals(random.Random(2)),
        "units": choice_items(random.Random(3), UNITS),
        "reading": choice_items(random.Random(4), READING),
    }
    for name, items in tasks.items():
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        (OUT / f"{name}.jsonl").write_text(text, encoding="utf-8")
        print(f"{name}: {len(items)} items")


if __name__ == "__main__":
    main()
