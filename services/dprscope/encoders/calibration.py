"""Built-in calibration texts for int8 quantisation: a few questions and encyclopedic passages.

The int8 recipe (``onnx_backend.quantize_int8``) needs each quantised MatMul's per-channel
input range to find the few outlier channels that ruin per-tensor activation quantisation.
Those channels are a property of the model, not of the data (BERT-style models put them
in the same dimensions for any English input), so a small generic set finds them: on
all-MiniLM-L6-v2 the smoothing scales from these texts and from 100 real NQ questions plus 200
Wikipedia passages give the same retrieval quality (bench/RESULTS.md "Encoder backends").

Shipping the texts with the package keeps quantisation self-contained: a checkpoint loaded
through ModelAdmin on an ``--quantize int8`` server is calibrated at export time without
any corpus at hand. The texts are original, written for this purpose, and cover short
queries and ~100-token titled passages, the two shapes the encoder serves.
"""

from __future__ import annotations

QUESTIONS: tuple[str, ...] = (
    "who wrote the first modern novel",
    "what is the tallest mountain in africa",
    "when did the roman empire fall",
    "how do vaccines train the immune system",
    "where is the great barrier reef",
    "who invented the telephone",
    "what is the boiling point of water at sea level",
    "how many bones are in the adult human body",
    "which river flows through cairo",
    "when was the first moon landing",
    "who played the lead role in the 1939 film gone with the wind",
    "what does dna stand for",
    "why is the sky blue",
    "what year did the berlin wall come down",
    "which country has the largest population",
    "who is the author of pride and prejudice",
    "how long does light from the sun take to reach earth",
    "what is the currency of japan",
    "who won the first football world cup",
    "what is the chemical symbol for gold",
    "how does a steam engine work",
    "where was the olympic games held in 1996",
    "what is the smallest prime number",
    "who painted the ceiling of the sistine chapel",
)

PASSAGES: tuple[tuple[str, str], ...] = (
    ("Photosynthesis",
     "Photosynthesis is the process by which green plants, algae and some bacteria turn light into chemical "
     "energy. In the chloroplasts, chlorophyll absorbs mostly red and blue light and uses that energy to split "
     "water, releasing oxygen as a by-product. The energy captured in this way drives the Calvin cycle, which "
     "fixes carbon dioxide from the air into sugars. Almost all of the oxygen in the atmosphere and most of "
     "the food chains on land and in the oceans depend on it."),
    ("Danube",
     "The Danube is the second-longest river in Europe after the Volga. It rises in the Black Forest in "
     "Germany and flows roughly 2,850 kilometres east and south through ten countries, including Austria, "
     "Hungary, Serbia and Romania, before emptying into the Black Sea through a wide delta. Four capital "
     "cities lie on its banks: Vienna, Bratislava, Budapest and Belgrade. Since antiquity it has been an "
     "important trade route and, for a time, a frontier of the Roman Empire."),
    ("Printing press",
     "The movable-type printing press was developed in Mainz around 1440 by Johannes Gutenberg, a goldsmith "
     "who combined an oil-based ink, a hand mould for casting metal type and a screw press adapted from wine "
     "making. His Bible, completed in about 1455, was one of the first major books printed in Europe. Within "
     "fifty years presses were working in more than two hundred cities, and the spread of cheap books helped "
     "the Renaissance, the Reformation and the scientific revolution."),
    ("Jazz",
     "Jazz is a music genre that originated in the African-American communities of New Orleans in the late "
     "19th and early 20th centuries. It draws on blues, ragtime and brass band traditions and is known for "
     "swung rhythms, blue notes, call and response and, above all, improvisation. Over the following decades "
     "it developed into many styles, among them swing, bebop, cool jazz, modal jazz and fusion, and "
     "musicians such as Louis Armstrong, Duke Ellington and Miles Davis became famous around the world."),
    ("Volcano",
     "A volcano is an opening in a planet's crust through which molten rock, ash and gases escape from "
     "below the surface. On Earth most volcanoes are found where tectonic plates pull apart or push "
     "together, such as along the Pacific Ring of Fire, although some, like those of Hawaii, sit above "
     "hot spots in the middle of a plate. Eruptions range from slow lava flows to violent explosions that "
     "can throw ash high into the stratosphere and cool the climate for a year or more."),
    ("Alan Turing",
     "Alan Turing (1912-1954) was an English mathematician and computer scientist. In 1936 he described an "
     "abstract machine that could carry out any computation given the right instructions, an idea that "
     "became the foundation of theoretical computer science. During the Second World War he worked at "
     "Bletchley Park, where he helped design machines that broke German naval codes. He later proposed "
     "what is now called the Turing test as a way of asking whether a machine can think."),
    ("Coffee",
     "Coffee is a drink brewed from the roasted and ground seeds of the berries of Coffea plants, most "
     "often the arabica and robusta species. The plant is native to tropical Africa, and by the 15th "
     "century coffee was being drunk in Yemen, from where it spread to the Middle East, Europe and the "
     "Americas. Today Brazil is the largest producer. The caffeine it contains is a mild stimulant, and "
     "coffee houses have long served as places for conversation, business and politics."),
    ("Antarctica",
     "Antarctica is Earth's southernmost continent and contains the geographic South Pole. About 98 per "
     "cent of it is covered by ice that averages almost two kilometres in thickness, and it holds most of "
     "the world's fresh water. It is the coldest, driest and windiest continent, and it has no permanent "
     "human population, although several thousand scientists live at research stations there during the "
     "summer. The Antarctic Treaty of 1959 sets it aside for peaceful research."),
    ("Mitochondrion",
     "A mitochondrion is an organelle found in the cells of most plants, animals and fungi. It is often "
     "called the powerhouse of the cell because it produces most of the cell's supply of adenosine "
     "triphosphate, the molecule used to store and move chemical energy. Mitochondria have their own small "
     "circular genome, which is inherited from the mother in humans, and are thought to descend from "
     "bacteria that were engulfed by an ancestral cell more than a billion years ago."),
    ("Silk Road",
     "The Silk Road was a network of trade routes that linked China with Central Asia, Persia, Arabia and "
     "the Mediterranean from the second century BC until the 15th century. Besides silk, merchants carried "
     "spices, paper, glass, horses and precious metals, and the routes also spread religions, languages, "
     "technologies and diseases. Cities such as Samarkand and Kashgar grew rich as stopping points for "
     "caravans crossing deserts and mountain passes."),
    ("Football World Cup",
     "The FIFA World Cup is an international association football competition contested by the men's "
     "national teams of FIFA's member associations. It has been held every four years since the first "
     "tournament in Uruguay in 1930, except in 1942 and 1946 because of the Second World War. The final "
     "tournament brings together the teams that qualified over the previous three years, and it is one of "
     "the most widely watched sporting events in the world."),
    ("Great Fire of London",
     "The Great Fire of London swept through the central parts of the city from Sunday 2 September to "
     "Thursday 6 September 1666. It began in a bakery on Pudding Lane shortly after midnight and, driven "
     "by a strong east wind, destroyed more than 13,000 houses, 87 parish churches and St Paul's Cathedral. "
     "The rebuilding that followed used brick and stone instead of timber, and Christopher Wren designed "
     "the new cathedral and many of the churches."),
)


def calibration_inputs() -> tuple[list[str], list[tuple[str, str]]]:
    """(questions, (title, text) passages) to run through an encoder before quantising it."""
    return list(QUESTIONS), list(PASSAGES)
