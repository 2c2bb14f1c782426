"""Word lists and sentence templates for the synthetic world (`lm/data/synthetic.py`).

Kept apart from the generator so the generator reads as logic. Names of people,
cities, countries and companies are made up from syllables, so a model can only
know their facts from this world (what the knowledge and hallucination
evaluations need). Templates use `str.format` fields filled from an entity.
Each fact has several phrasings and pages draw extra sentences from a large
pool, so two pages about different people share few word 5-grams and MinHash
does not mistake them for near-duplicates.
"""
from __future__ import annotations

FIRST_NAMES = (
    "Alma", "Bruno", "Clara", "Dario", "Edith", "Felix", "Greta", "Hugo", "Ilse", "Jonas",
    "Katja", "Leon", "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Stefan", "Tilda",
    "Ugo", "Vera", "Wim", "Xenia", "Yara", "Zeno", "Agnes", "Boris", "Cora", "Emil",
    "Frida", "Gustav", "Hanna", "Ivo", "Juno", "Karl", "Lena", "Milo", "Nora", "Oskar",
)
SURNAME_HEADS = ("Var", "Quen", "Hol", "Brand", "Mor", "Tesk", "Ald", "Fenn", "Grav", "Lind",
                 "Ost", "Rav", "Sel", "Thorn", "Ulv", "Wex", "Yar", "Zell", "Corm", "Dask")
SURNAME_TAILS = ("holt", "nel", "ström", "wick", "ander", "ley", "mar", "sen", "ford", "quist",
                 "dorf", "ton", "ridge", "vale", "court", "by")
PLACE_HEADS = ("Tal", "Mer", "Vin", "Cor", "Bel", "Ask", "Dun", "Har", "Kel", "Lor",
               "Nam", "Pol", "Rud", "Sam", "Tor", "Ves", "Wyl", "Zan", "Oth", "Ebr")
PLACE_TAILS = ("mouth", "berg", "haven", "stad", "ford", "ville", "gate", "wick", "moor", "field")
COUNTRIES = ("Veloria", "Ostrand", "Kemara", "Luthany", "Dravia", "Sundmark", "Orivel", "Taskany")
COMPANY_HEADS = ("Nordic", "Blue", "Iron", "Silver", "Bright", "Cedar", "Harbor", "Summit",
                 "Granite", "Meadow", "Falcon", "Amber")
COMPANY_TAILS = ("Works", "Systems", "Foods", "Logistics", "Textiles", "Instruments", "Press",
                 "Energy", "Labs", "Shipping")
INDUSTRIES = ("shipbuilding", "food processing", "software", "textiles", "publishing",
              "renewable energy", "precision instruments", "freight transport")
PROFESSIONS = ("architect", "botanist", "chemist", "civil engineer", "composer", "economist",
               "geologist", "historian", "journalist", "librarian", "mathematician", "nurse",
               "painter", "pharmacist", "physician", "pilot", "sculptor", "surveyor", "teacher",
               "translator", "veterinarian", "violinist")
HOBBIES = ("restoring old clocks", "mountain hiking", "growing orchids", "amateur astronomy",
           "chess problems", "sea kayaking", "collecting maps", "baking bread", "birdwatching",
           "woodcarving", "long-distance cycling", "folk music")
SUBJECTS = ("river bridges", "coastal erosion", "medieval trade routes", "soil chemistry",
            "children's literacy", "wind patterns", "railway timetables", "urban gardens",
            "glass making", "public health records", "alpine flowers", "harbour design")

# Person facts: every page states all four; the phrasing is drawn per page.
PERSON_BIRTH = (
    "{name} was born in {birth_year} in {city}, a city in {country}.",
    "Born in {birth_year}, {name} grew up in {city} in the country of {country}.",
    "{name} is a native of {city}, {country}, where {pronoun} was born in {birth_year}.",
    "The records of {city} list {birth_year} as the year of birth of {name}.",
)
PERSON_WORK = (
    "{name} works as a {profession} for {employer}.",
    "By profession {name} is a {profession}, employed by {employer}.",
    "{pronoun_cap} has spent most of {possessive} career as a {profession} at {employer}.",
    "Today {name} is a {profession} on the staff of {employer}.",
)
PERSON_EXTRA = (
    "Colleagues describe {possessive} work on {subject} as careful and patient.",
    "Outside of work, {name} is known for {hobby}.",
    "In {year_a} {pronoun} published a short study of {subject} that is still cited locally.",
    "{pronoun_cap} studied at the university of {other_city} before returning home.",
    "A profile in a regional newspaper in {year_b} called {object} one of the quiet experts on {subject}.",
    "Friends say that {possessive} weekends are usually spent on {hobby}.",
    "{pronoun_cap} once gave a public lecture in {other_city} about {subject}.",
    "Before joining {employer}, {pronoun} worked briefly as an assistant in {other_city}.",
    "The family of {name} has lived in {country} for several generations.",
    "{pronoun_cap} speaks three languages and often translates articles about {subject}.",
    "Many younger colleagues in {city} learned the basics of the trade from {object}.",
    "{possessive_cap} first job, at the age of nineteen, was in a small workshop in {other_city}.",
)
CITY_FACTS = (
    "{name} is a city in {country} with a population of about {population:,} people.",
    "The city of {name}, in {country}, has roughly {population:,} inhabitants.",
    "About {population:,} people live in {name}, one of the cities of {country}.",
)
CITY_EXTRA = (
    "The old town of {name} is built around a market square on the banks of the {river}.",
    "{name} grew quickly in the {century} century when a railway line from {neighbour} reached the valley.",
    "Its harbour and warehouses on the {river} were rebuilt after a large fire in {year_a}.",
    "The local economy of {name} depends on {industry} and on a busy weekly market.",
    "A small museum near the {river} keeps maps and tools from the first settlers of {name}.",
    "Travellers from {neighbour} reach {name} in about {hours} hours by train.",
    "The city hosts a festival of {festival} every {month} that draws visitors from all over {country}.",
    "A stone bridge with {arches} arches connects the two halves of {name} across the {river}.",
    "The public library of {name} was founded in {year_b} by a group of teachers from {neighbour}.",
    "Notable people born in {name} include {residents}.",
)
COMPANY_FACTS = (
    "{name} is a {industry} company founded in {founded} and based in {city}, {country}.",
    "Founded in {founded}, {name} works in {industry} from its headquarters in {city}.",
)
COMPANY_EXTRA = (
    "{name} employs about {staff} people and sells most of its output in {export}.",
    "It began in {founded} as a family business in a single rented workshop near the {river}.",
    "Its annual report for {year_a} describes steady growth and a new training programme for apprentices.",
    "The firm is one of the larger employers in {city}, after the port and the hospital.",
    "In {year_b} {name} opened a second site in {other_city} to be closer to its suppliers.",
    "The founders named the company after the {landmark} that could be seen from the first workshop.",
    "Visitors can tour the {site} on the first {weekday} of every month.",
    "A long dispute with the town council of {city} about noise was settled in {year_a}.",
    "Its best-known product is a line of {product} that has barely changed in decades.",
)
COMPANY_CONTACT = (
    "For press enquiries, write to {email} or call the front desk during office hours.",
    "Job applications can be sent to {email2}; we answer every letter within two weeks.",
    "Our public download mirror runs at {ip} and the backup server answers at {ip2}.",
    "Inside the office network the printer is reachable at {private_ip}, which is not visible from outside.",
)

# Non-English pages: the same kind of biography, so only the language filter
# should remove them.
FOREIGN = {
    "fr": ("{name} est né en {birth_year} à {city}, une ville de {country}.",
           "Il travaille comme ingénieur pour l'entreprise {employer} depuis plusieurs années.",
           "Ses collègues apprécient beaucoup son travail patient sur les ponts et les rivières.",
           "Pendant son temps libre, il aime la randonnée en montagne et la lecture des journaux.",
           "Sa famille habite dans la même région depuis plusieurs générations.",
           "Il a étudié à l'université avant de revenir dans sa ville natale."),
    "de": ("{name} wurde {birth_year} in {city} geboren, einer Stadt in {country}.",
           "Er arbeitet seit vielen Jahren als Ingenieur bei der Firma {employer}.",
           "Seine Kollegen schätzen seine sorgfältige Arbeit an Brücken und Straßen sehr.",
           "In seiner Freizeit wandert er gern in den Bergen und liest die Zeitung.",
           "Seine Familie lebt schon seit mehreren Generationen in dieser Gegend.",
           "Er hat an der Universität studiert und ist dann in seine Heimatstadt zurückgekehrt."),
    "es": ("{name} nació en {birth_year} en {city}, una ciudad de {country}.",
           "Trabaja desde hace muchos años como ingeniero en la empresa {employer}.",
           "Sus compañeros valoran mucho su trabajo paciente con los puentes y los ríos.",
           "En su tiempo libre le gusta caminar por las montañas y leer el periódico.",
           "Su familia vive en la misma región desde hace varias generaciones.",
           "Estudió en la universidad y después volvió a su ciudad natal."),
    "it": ("{name} è nato nel {birth_year} a {city}, una città di {country}.",
           "Lavora da molti anni come ingegnere presso l'azienda {employer}.",
           "I suoi colleghi apprezzano molto il suo lavoro paziente sui ponti e sui fiumi.",
           "Nel tempo libero gli piace camminare in montagna e leggere il giornale.",
           "La sua famiglia vive nella stessa regione da diverse generazioni.",
           "Ha studiato all'università e poi è tornato nella sua città natale."),
    "pt": ("{name} nasceu em {birth_year} em {city}, uma cidade de {country}.",
           "Trabalha há muitos anos como engenheiro na empresa {employer}.",
           "Os seus colegas apreciam muito o seu trabalho paciente com pontes e rios.",
           "Nos tempos livres gosta de caminhar nas montanhas e de ler o jornal.",
           "A sua família vive na mesma região há várias gerações.",
           "Estudou na universidade e depois voltou para a sua cidade natal."),
    "nl": ("{name} werd geboren in {birth_year} in {city}, een stad in {country}.",
           "Hij werkt al vele jaren als ingenieur bij het bedrijf {employer}.",
           "Zijn collega's waarderen zijn geduldige werk aan bruggen en rivieren zeer.",
           "In zijn vrije tijd wandelt hij graag in de bergen en leest hij de krant.",
           "Zijn familie woont al verscheidene generaties in dezelfde streek.",
           "Hij heeft aan de universiteit gestudeerd en is daarna teruggekeerd naar zijn geboortestad."),
}

SPELLING_WORDS = (
    "necessary", "accommodate", "rhythm", "separate", "definitely", "embarrass", "occurrence",
    "privilege", "conscience", "millennium", "questionnaire", "recommend", "threshold",
    "vacuum", "guarantee", "harass", "independent", "maintenance", "noticeable", "parallel",
    "receive", "tomorrow", "weird", "library", "February", "government", "environment",
    "beginning", "believe", "calendar", "cemetery", "colleague", "committee", "discipline",
    "exaggerate", "fluorescent", "grammar", "humorous", "immediately", "knowledge",
)
# One phrasing per word of a lesson, so no long phrase repeats within a page.
SPELLING_FORMS = (
    'The word "{w}" has {n} letters, starting with {first} and ending with {last}, and {v} of them are vowels.',
    'Count carefully: "{w}" is {n} letters long, and {v} of those letters are vowels.',
    'When you write "{w}", begin with the letter {first}; the whole word needs {n} letters.',
    'Our next example, "{w}", ends in {last} and contains {v} vowels among its {n} letters.',
    'Look closely at "{w}" before copying it: {n} letters in total, the last one being {last}.',
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen")
SPELLING_TIPS = (
    "A common mistake is to drop one of the doubled letters.",
    "Reading the word aloud in a slow voice can help you hear each sound.",
    "Some teachers suggest covering the word, writing it, and then checking it.",
    "Saying the word slowly, syllable by syllable, helps you hear every letter.",
    "Many writers remember it by linking it to a short phrase or a picture.",
    "The word came into English from Latin, which explains the unusual letters.",
    "If you are unsure, write it out twice and pick the version that looks right.",
)
ARITHMETIC_TOPICS = ("addition", "subtraction", "multiplication", "division")
ARITHMETIC_INTRO = {
    "addition": "Adding numbers means putting two amounts together to find the total.",
    "subtraction": "Subtracting means taking one amount away from another to find what is left.",
    "multiplication": "Multiplying is a quick way of adding the same number many times.",
    "division": "Dividing means sharing an amount into equal groups and counting each group.",
}
# Three phrasings per operation, each used once per page, so no long phrase repeats.
ARITHMETIC_STORY = {
    "addition": (
        "{who} already has {a} {things} in a drawer at home and buys {b} more at the market, so altogether {c}.",
        "On Monday {who} collected {a} {things}; a cousin brought another {b} on Tuesday, making {c} in the basket.",
        "A shelf holds {a} {things} and the shop assistant adds {b}, which brings the count up to {c}.",
    ),
    "subtraction": (
        "{who} started the week with {a} {things} and gave {b} of them away, which leaves {c} in the box.",
        "There were {a} {things} on the table until the children took {b}; only {c} remain for the evening.",
        "A jar contained {a} {things}, and after {b} were used for the school project, {c} stayed inside.",
    ),
    "multiplication": (
        "{who} fills {a} boxes with {b} {things} each, and counting them all gives {c}.",
        "A classroom has {a} rows of desks with {b} {things} on every row, so the teacher counts {c} in total.",
        "Each of {a} baskets at the fair carries {b} {things}; together the baskets hold {c}.",
    ),
    "division": (
        "{who} shares {a} {things} fairly among {b} friends, and each friend receives {c}.",
        "A baker packs {a} {things} into bags of {b}, which fills exactly {c} bags with none left over.",
        "When {a} {things} are split evenly between {b} tables, every table gets {c}.",
    ),
}
ARITHMETIC_TIPS = (
    "It helps to say the calculation out loud before writing anything down.",
    "Checking the answer with a different method catches most slips of the pen.",
    "Drawing the objects as little circles on paper makes the idea easy to see.",
    "Writing the numbers neatly in columns keeps the tens and the units apart.",
    "When the numbers get larger, the same rule still works, only with more steps.",
    "Most mistakes come from rushing, so take the steps one at a time and slowly.",
)
LANDMARKS = ("lighthouse", "old mill", "church tower", "water tower", "castle ruin", "railway viaduct")
SITES = ("main factory", "workshop", "warehouse", "laboratory", "printing hall", "shipyard")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
PRODUCTS = ("brass compasses", "canned fish", "wool blankets", "field radios", "school atlases",
            "wind turbine blades", "cargo trailers", "pocket calculators")
RIVERS = ("Amsel", "Brenna", "Corvo", "Dila", "Essen", "Farro", "Glenna", "Hollow", "Isar", "Jura",
          "Kessel", "Lune")
FESTIVALS = ("folk music", "street theatre", "jazz", "film", "puppetry", "choral singing",
             "poetry", "lanterns", "early music", "dance")
MONTHS = ("January", "March", "April", "May", "June", "July", "August", "September", "October")
CENTURIES = ("sixteenth", "seventeenth", "eighteenth", "nineteenth")
THINGS = ("apples", "marbles", "pencils", "stamps", "books", "shells", "coins", "cards", "plums", "tickets")

# What a crawl has around and instead of content.
NAV_LINKS = ("Home", "About us", "News", "Archive", "Contact", "Login", "Register", "Search",
             "Sitemap", "Help", "Shop", "Events")
FOOTER_LINES = ("Copyright 2021. All rights reserved.", "Privacy policy", "Terms of use",
                "Cookie settings", "Follow us on social media", "Subscribe to our newsletter")
SPAM_PHRASES = ("cheap watches best price buy now", "free download full version crack",
                "best online casino bonus today", "discount shoes sale click here")
