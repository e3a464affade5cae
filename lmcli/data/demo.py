"""The embedded demo corpus: synthetic children's stories in the style of TinyStories.

lmcli ships no data, yet ``make demo`` must train a tokenizer and a model that learn something
real in minutes. This module writes such a corpus from a seeded generator: each story draws a
hero and a friend (name, kind, pronouns), a place, a weather, a treasured object and a food,
then tells one of several plots (a lost toy, learning to share, a fear overcome, making a gift,
a race, helping a hurt animal, a surprise party, a rainy day indoors, growing a plant, a boat
trip, welcoming a newcomer) through narration and
dialogue, each sentence picked from several phrasings. The vocabulary is small and the grammar
regular, as in TinyStories, so a small model can learn agreement (he/she, his/her), names that
recur within a story, dialogue punctuation and story shape (opening, problem, resolution, moral).

Stories are separated by ``<|endoftext|>`` like the real TinyStories files. The same seed
always produces the same files; a version stamp regenerates them when the generator changes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from lmcli.atomic import atomic_open
from lmcli.tokenizer.special_tokens import END_OF_TEXT
from lmcli.workspace import DEMO_SPLITS, Workspace

GENERATOR_VERSION = 2
SEED = 1337
STORIES = {"train": 6000, "valid": 300}
SEPARATOR = END_OF_TEXT
STAMP_FILE = "demo-corpus.json"

GIRLS = [
    "Lily", "Mia", "Sue", "Anna", "Emma", "Zoe", "Lucy", "Ella", "Rosa", "Amy", "Kim", "Jane", "Sara", "Nina", "Ivy",
    "Maya", "Chloe", "Grace", "Ruby", "Olive", "Hana", "Leila", "Molly", "Poppy", "Tessa", "Wren", "Clara", "Fatima", "Juno",
]
BOYS = [
    "Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Joe", "Finn", "Noah", "Alex", "Dan", "Eli", "Hugo", "Ravi",
    "Oscar", "Theo", "Omar", "Kai", "Liam", "Milo", "Jonah", "Arlo", "Felix", "Ezra", "Ollie", "Pablo", "Yusuf", "Caleb",
]
ANIMALS = [
    "cat", "dog", "bunny", "bear", "duck", "fox", "frog", "mouse", "bird", "pig", "lion", "owl", "turtle", "puppy",
    "elephant", "giraffe", "squirrel", "penguin", "hedgehog", "monkey", "kitten", "goat", "dragon", "unicorn", "snail",
]
ANIMAL_NAMES = [
    "Spot", "Fluffy", "Bubbles", "Pip", "Coco", "Biscuit", "Sunny", "Whiskers", "Daisy", "Buddy", "Pepper",
    "Nibbles", "Ziggy", "Maple", "Pumpkin", "Rocky", "Snowball", "Twinkle", "Peanut", "Goldie", "Bramble",
]
PLACES = [
    ("park", "under a big oak tree"), ("forest", "near a quiet stream"), ("beach", "by the blue sea"),
    ("garden", "among the red flowers"), ("farm", "next to the old barn"), ("school", "in the sunny yard"),
    ("town", "on a busy little street"), ("meadow", "where the tall grass grew"), ("lake", "on the soft green bank"),
    ("hill", "at the very top"), ("zoo", "near the monkey house"), ("playground", "beside the yellow slide"),
    ("library", "between the tall shelves"), ("river", "under the little bridge"), ("market", "behind the fruit stand"),
    ("castle", "in the old courtyard"), ("jungle", "beneath the giant leaves"), ("mountain", "by a cold waterfall"),
    ("village", "near the bakery"), ("orchard", "under the apple trees"), ("pond", "among the lily pads"),
]
OBJECTS = [
    "red ball", "blue kite", "shiny stone", "toy car", "teddy bear", "yellow hat", "small boat", "box of crayons",
    "magic wand", "green scarf", "wooden train", "pink balloon", "book of stars", "silver bell", "jar of buttons",
    "paper crown", "purple umbrella", "treasure map", "tiny drum", "spotted blanket", "golden key", "toy robot",
    "bucket and spade", "glass marble", "feather pen", "music box", "orange bicycle", "lucky penny", "snow globe",
]
FOODS = [
    "apple pie", "cookies", "cake", "soup", "sandwiches", "pancakes", "ice cream", "carrots", "bread and jam", "muffins",
    "strawberries", "honey toast", "noodles", "cheese", "lemonade", "popcorn", "cherries", "banana bread", "porridge",
]
WEATHERS = ["sunny", "windy", "cold", "warm", "rainy", "snowy", "bright", "cloudy", "foggy", "chilly", "lovely", "quiet"]
FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "thankful", "cheerful", "joyful", "calm", "delighted"]
FEELINGS_BAD = ["sad", "scared", "worried", "angry", "lonely", "grumpy", "upset", "nervous", "shy", "tired"]
OPENINGS = ["Once upon a time", "One day", "Long ago", "One {weather} morning", "Once", "One {weather} day"]
MORALS = [
    "Sharing makes everyone happy.", "It is good to help your friends.", "Being brave is not the same as not being scared.",
    "Friends make hard things easy.", "Kind words can fix a bad day.", "If you keep trying, you can do it.",
    "Saying sorry is the first step to being friends again.", "A gift made with love is the best gift of all.",
]


@dataclass(frozen=True)
class Character:
    name: str
    kind: str
    he: str
    his: str
    him: str

    @property
    def intro(self) -> str:
        """'a little girl named Lily' / 'a small cat named Spot'."""
        return f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} named {self.name}"


def make_character(rng: random.Random, avoid: str = "") -> Character:
    roll = rng.random()
    if roll < 0.6:
        girl = rng.random() < 0.5
        name = rng.choice([n for n in (GIRLS if girl else BOYS) if n != avoid])
        kind = rng.choice(["little girl", "girl"] if girl else ["little boy", "boy"])
    else:
        girl = rng.random() < 0.5
        name = rng.choice([n for n in ANIMAL_NAMES if n != avoid])
        adjective = rng.choice(["little", "small", "fluffy", "brave", "tiny", "happy", "curious", "clever", "gentle", "silly"])
        kind = f"{adjective} {rng.choice(ANIMALS)}"
    return Character(name, kind, *(("she", "her", "her") if girl else ("he", "his", "him")))


class Story:
    """Collects sentences; ``say`` fills templates with the cast's names and pronouns."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.hero = make_character(rng)
        self.friend = make_character(rng, avoid=self.hero.name)
        self.place, self.spot = rng.choice(PLACES)
        self.obj = rng.choice(OBJECTS)
        self.food = rng.choice(FOODS)
        self.weather = rng.choice(WEATHERS)
        self.paragraphs: list[list[str]] = [[]]

    def fields(self) -> dict[str, str]:
        h, f = self.hero, self.friend
        return {
            "hero": h.name, "he": h.he, "his": h.his, "him": h.him, "He": h.he.capitalize(), "His": h.his.capitalize(),
            "friend": f.name, "fhe": f.he, "fhis": f.his, "fhim": f.him, "Fhe": f.he.capitalize(),
            "place": self.place, "spot": self.spot, "obj": self.obj, "food": self.food, "weather": self.weather,
            "good": self.rng.choice(FEELINGS_GOOD), "bad": self.rng.choice(FEELINGS_BAD),
        }

    def say(self, *templates: str) -> None:
        """Add one sentence, chosen among equivalent phrasings."""
        text = self.rng.choice(templates).format_map(self.fields())
        self.paragraphs[-1].append(text[0].upper() + text[1:])

    def new_paragraph(self) -> None:
        self.paragraphs.append([])

    def text(self) -> str:
        return "\n\n".join(" ".join(p) for p in self.paragraphs if p)


def opening(s: Story) -> None:
    start = s.rng.choice(OPENINGS).format(weather=s.weather)
    s.say(f"{start}, there was {s.hero.intro}.", f"{start}, {s.hero.intro} lived near a {s.place}.")
    s.say("{He} loved to play at the {place} {spot}.", "Every day, {hero} went to the {place} to play.",
          "{hero} had a {obj} that {he} loved very much.", "{He} liked {food} more than anything.")
    s.say(f"{s.hero.name} had a friend, {s.friend.intro}.", "{hero} and {friend} were best friends.",
          f"One day, {s.hero.name} met {s.friend.intro}.")
    s.new_paragraph()


def plot_lost_toy(s: Story) -> None:
    s.say("One day, {hero} took {his} {obj} to the {place}.", "{hero} played with {his} {obj} {spot}.")
    s.say("But when it was time to go home, the {obj} was gone!", "Then {he} looked down and saw that {his} {obj} was not there.")
    s.say('"Oh no! Where is my {obj}?" {hero} cried.', '"My {obj} is lost!" said {hero}. {He} felt very {bad}.')
    s.new_paragraph()
    s.say('{friend} said, "Do not worry. I will help you look."', '"Let us look together," said {friend}.')
    s.say("They looked behind the trees and under the bench.", "They looked in the grass and near the water.",
          "They searched the whole {place}.")
    s.say("At last, {friend} found the {obj} under a pile of leaves.", "Then they saw the {obj} next to a big rock.")
    s.say('"Thank you, {friend}!" said {hero} with a big smile.', '{hero} hugged {friend}. "You are the best friend ever!"')


def plot_sharing(s: Story) -> None:
    s.say("{hero} had {food} for lunch.", "{hero}'s mom gave {him} some {food}.")
    s.say("{friend} had nothing to eat and looked {bad}.", "{friend} came by and looked at the {food} with big eyes.")
    s.say('"This is mine," said {hero}. "I do not want to share."', "At first, {hero} did not want to share.")
    s.new_paragraph()
    s.say("Then {hero} saw how {bad} {friend} was.", "But then {hero} remembered what {his} mom said about being kind.")
    s.say('"Here, you can have some," {he} said.', "{He} gave half of the {food} to {friend}.")
    s.say('{friend} smiled. "Thank you, {hero}!"', "{friend} was so {good} that {fhe} danced around.")
    s.say("Sharing made the {food} taste even better.", "They ate together and laughed all afternoon.")


def plot_fear(s: Story) -> None:
    fear = s.rng.choice(["the dark", "the big slide", "the deep water", "the loud thunder", "the tall tree"])
    s.say(f"{{hero}} was scared of {fear}.", f"There was one thing {{hero}} did not like: {fear}.")
    s.say('"I can not do it," {he} said quietly.', '"It is too scary," said {hero}, and {he} hid {his} face.')
    s.new_paragraph()
    s.say('{friend} held {his} hand. "I will be right here with you."', '"You are braver than you think," said {friend}.')
    s.say("{hero} took a deep breath.", "{hero} closed {his} eyes and counted to three.")
    s.say(f"Then {{he}} faced {fear}, one small step at a time.", "Slowly, {he} tried again.")
    s.say("It was not so scary after all!", "To {his} surprise, it was fun!")
    s.say('"I did it!" shouted {hero}. {He} felt very {good}.', "{hero} felt {good} and strong.")


def plot_gift(s: Story) -> None:
    who = s.rng.choice(["mom", "dad", "grandma", "grandpa", "teacher"])
    s.say(f"Tomorrow was the birthday of {{hero}}'s {who}.", f"{{hero}} wanted to make something special for {{his}} {who}.")
    s.say("{He} did not have any money to buy a present.", "{He} thought and thought about what to make.")
    s.new_paragraph()
    s.say("{friend} had an idea. \"Let us make a card with pictures!\"", '"We can make {food}!" said {friend}.')
    s.say("They worked all day with paper, glue and paint.", "They mixed, stirred and waited.",
          "It was hard work, and they made a big mess.")
    s.say(f"When the {who} saw the gift, {who} smiled a big smile.", f"The next day, {{hero}} gave the gift to {{his}} {who}.")
    s.say(f'"This is the best gift ever," said the {who}, and gave {{hero}} a hug.', "Everyone was {good}.")


def plot_race(s: Story) -> None:
    s.say("One {weather} day, the animals at the {place} had a race.", "{hero} and {friend} decided to have a race to the {place}.")
    s.say("{friend} was very fast, and {hero} was slow.", '"I will win!" said {friend}. "You are too slow."')
    s.say("{hero} felt {bad}, but {he} did not give up.", "{hero} wanted to try anyway.")
    s.new_paragraph()
    s.say("The race began! {friend} ran ahead and then stopped to rest.", "Ready, set, go! They ran as fast as they could.")
    s.say("{hero} kept going, step by step.", "{hero} did not stop, even when {his} legs were tired.")
    s.say("In the end, {hero} reached the finish first!", "At the end, they crossed the line together.")
    s.say('{friend} said, "You were great! I am sorry I laughed."', '"Good race," said {friend}, and they shook hands.')


def plot_hurt_animal(s: Story) -> None:
    animal = s.rng.choice(["bird", "kitten", "puppy", "duckling", "squirrel", "hedgehog"])
    s.say("While {hero} walked in the {place}, {he} heard a small cry.", f"{{hero}} found a little {animal} {{spot}}.")
    s.say(f"The {animal} had a hurt leg and could not walk.", f"The {animal} was cold and all alone.")
    s.say('"Poor thing," said {hero}. "We must help it."', "{hero} felt {bad} for the little animal.")
    s.new_paragraph()
    s.say("{hero} and {friend} made a soft bed from leaves.", "They carried it home in a box with a warm blanket.")
    s.say(f"They gave the {animal} water and a little food.", "Every day they took care of it.")
    s.say(f"Soon the {animal} was strong again.", f"After a few days, the {animal} could walk and play.")
    s.say(f"The {animal} said thank you in its own way, and everyone was {{good}}.",
          f"When they let the {animal} go, it looked back as if to say goodbye.")


def plot_party(s: Story) -> None:
    s.say("{hero} wanted to throw a surprise party for {friend}.", "It was {friend}'s birthday, but {fhe} thought everyone forgot.")
    s.say("{He} made a cake and hung balloons in the {place}.", "{He} asked all the friends to come and hide.")
    s.new_paragraph()
    s.say("When {friend} came, everyone jumped out and shouted, \"Surprise!\"", "{friend} walked in and saw everyone.")
    s.say("{friend} was so surprised that {fhe} laughed and laughed.", "{Fhe} could not believe it!")
    s.say("They ate {food}, played games and sang songs.", "They danced until the sun went down.")
    s.say('"This is the best day ever," said {friend}.', "It was a day they would never forget.")


def plot_rainy_day(s: Story) -> None:
    s.say("One day it was rainy, and {hero} could not go to the {place}.", "The rain fell all morning and {hero} felt {bad}.")
    s.say('"There is nothing to do," {he} said with a sigh.', "{He} sat by the window and watched the drops.")
    s.new_paragraph()
    s.say("Then {friend} came over with a {obj}.", "{friend} knocked on the door, wet and smiling.")
    s.say("They built a fort out of pillows and blankets.", "They made up a story about a dragon and a brave knight.",
          "They played with the {obj} and laughed.")
    s.say("Soon the sun came out and they saw a big rainbow.", "By the time the rain stopped, they did not want the game to end.")
    s.say("{hero} learned that a rainy day can be fun with a friend.", "{hero} was not {bad} anymore.")


def plot_garden(s: Story) -> None:
    seed = s.rng.choice(["sunflower", "pumpkin", "tomato", "bean", "rose", "carrot"])
    s.say(f"{{hero}} found a tiny {seed} seed in {{his}} pocket.", f"{{hero}}'s grandma gave {{him}} a {seed} seed.")
    s.say('"What will it grow into?" {he} wondered.', "{He} dug a small hole {spot} and planted the seed.")
    s.say("Every morning, {hero} gave it water.", "{hero} and {friend} watered it and sang to it every day.")
    s.new_paragraph()
    s.say("For a long time, nothing happened, and {hero} felt {bad}.", "Days went by, and the ground stayed brown.")
    s.say('{friend} said, "Be patient. Good things take time."', '"Do not give up," said {friend}.')
    s.say(f"One morning, a green sprout poked out of the soil. Soon it became a big {seed}!",
          f"Then one day, there was a tall {seed} plant, taller than {{hero}}!")
    s.say("{hero} clapped {his} hands. {He} was so {good}.", "They shared it with everyone in the {place}.")


def plot_boat_trip(s: Story) -> None:
    s.say("{hero} and {friend} built a little boat out of wood and string.", "One {weather} morning, they went for a ride in a little boat.")
    s.say("They sailed across the water, waving at the fish.", "The boat rocked gently as they sang a song.")
    s.say("Suddenly, the wind blew hard and the boat began to spin!", "Then a big wave splashed them and they got all wet.")
    s.new_paragraph()
    s.say('"Hold on tight!" shouted {friend}.', "{hero} was {bad}, but {he} held the rope.")
    s.say("Together they paddled and paddled until they reached the shore.", "They worked as a team and steered the boat home.")
    s.say("They laughed as they dried off in the sun.", '"What an adventure!" said {hero}.')


def plot_new_friend(s: Story) -> None:
    newcomer = s.rng.choice(["a new girl", "a new boy", "a shy little owl", "a lost kitten", "a quiet giraffe"])
    s.say(f"One day, {newcomer} came to the {{place}}.", f"{{hero}} saw {newcomer} sitting all alone {{spot}}.")
    s.say("Nobody played with the newcomer, who looked very {bad}.", "The newcomer did not know anyone.")
    s.say('{hero} walked over and said, "Hello! Do you want to play with us?"', "{hero} remembered how it felt to be new.")
    s.new_paragraph()
    s.say("They played tag, hide and seek, and jumped in puddles.", "They showed the newcomer all the best places in the {place}.")
    s.say("Soon everyone was laughing together.", '"Thank you for being so kind," the newcomer said softly.')
    s.say("{hero} had made a new friend.", "Now there were three best friends instead of two.")


PLOTS = [
    plot_lost_toy, plot_sharing, plot_fear, plot_gift, plot_race, plot_hurt_animal, plot_party, plot_rainy_day,
    plot_garden, plot_boat_trip, plot_new_friend,
]


def ending(s: Story) -> None:
    s.new_paragraph()
    s.say("From that day on, {hero} and {friend} were the best of friends.", "That night, {hero} went to bed with a smile.",
          "And they all lived happily ever after.", "{hero} would always remember that day.", "The end.")
    if s.rng.random() < 0.4:
        s.paragraphs[-1].append(s.rng.choice(MORALS))


def make_story(rng: random.Random) -> str:
    """One story: opening, one or two plots, an ending."""
    s = Story(rng)
    opening(s)
    for plot in rng.sample(PLOTS, k=1 if rng.random() < 0.75 else 2):
        plot(s)
        s.new_paragraph()
    ending(s)
    return s.text()


def write_split(path: Path, rng: random.Random, count: int) -> None:
    with atomic_open(path, encoding="utf-8") as f:
        for i in range(count):
            f.write(make_story(rng))
            f.write(f"\n{SEPARATOR}\n" if i < count - 1 else "\n")


def is_fresh(stamp_path: Path, stamp: dict) -> bool:
    """Whether the corpus beside ``stamp_path`` was made by this generator (an unreadable stamp: no)."""
    try:
        return json.loads(stamp_path.read_text()) == stamp
    except (OSError, ValueError):
        return False


def ensure_demo_corpus(workspace: Workspace) -> dict[str, Path]:
    """Write the workspace's demo-train.txt and demo-valid.txt unless they are already up to date."""
    paths = {split: workspace.demo_path(split) for split in DEMO_SPLITS}
    stamp = {"generator_version": GENERATOR_VERSION, "seed": SEED, "stories": STORIES}
    stamp_path = workspace.data_dir / STAMP_FILE
    if is_fresh(stamp_path, stamp) and all(p.is_file() for p in paths.values()):
        return paths
    rng = random.Random(SEED)
    for split in DEMO_SPLITS:
        write_split(paths[split], rng, STORIES[split])
    with atomic_open(stamp_path) as f:
        json.dump(stamp, f)
    return paths


def demo_split(workspace: Workspace, split: str) -> Path:
    """The path of one demo split, writing the corpus first if needed (the default input of several commands)."""
    return ensure_demo_corpus(workspace)[split]
