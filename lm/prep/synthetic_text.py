"""Word lists and non-fact text for the synthetic world (`lm/prep/synthetic.py`).

Kept apart from the generator so the generator reads as logic. Names of people,
cities, countries and companies are made up from syllables, so a model can only
know their facts from this world (what the knowledge and hallucination
evaluations need). The sentences that state facts live in `synthetic_facts`;
here are the names, the colour words, the tutorials' text (arithmetic,
spelling), the contact details, and the junk (other languages, spam, chrome).
Templates use `str.format` fields.
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
    'The word {w} has {n} letters, starting with {first} and ending with {last}, and {v} of them are vowels.',
    'Count carefully: {w} is {n} letters long, and {v} of those letters are vowels.',
    'When you write {w}, begin with the letter {first}; the whole word needs {n} letters.',
    'Our next example, {w}, ends in {last} and contains {v} vowels among its {n} letters.',
    'Look closely at {w} before copying it: {n} letters in total, the last one being {last}.',
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
# Six phrasings per operation, three per page, so no long phrase repeats and pages differ.
ARITHMETIC_STORY = {
    "addition": (
        "{who} already has {a} {things} in a drawer at home and buys {b} more at the market, so altogether {c}.",
        "On Monday {who} collected {a} {things}; a cousin brought another {b} on Tuesday, making {c} in the basket.",
        "A shelf holds {a} {things} and the shop assistant adds {b}, which brings the count up to {c}.",
        "The first crate had {a} {things} and the second had {b}; poured together they make {c}.",
        "{who} counted {a} {things} in the morning and found {b} more after lunch, {c} for the whole day.",
        "If a library lends out {a} {things} on Friday and {b} on Saturday, it has lent {c} over the weekend.",
    ),
    "subtraction": (
        "{who} started the week with {a} {things} and gave {b} of them away, which leaves {c} in the box.",
        "There were {a} {things} on the table until the children took {b}; only {c} remain for the evening.",
        "A jar contained {a} {things}, and after {b} were used for the school project, {c} stayed inside.",
        "Of the {a} {things} that {who} ordered, {b} arrived broken, so only {c} could be used.",
        "The club owned {a} {things} before the flood and lost {b} of them; {c} were saved.",
        "A stall opened with {a} {things} for sale and sold {b} by noon, keeping {c} for the afternoon.",
    ),
    "multiplication": (
        "{who} fills {a} boxes with {b} {things} each, and counting them all gives {c}.",
        "A classroom has {a} rows of desks with {b} {things} on every row, so the teacher counts {c} in total.",
        "Each of {a} baskets at the fair carries {b} {things}; together the baskets hold {c}.",
        "If {who} saves {b} {things} every week for {a} weeks, the collection grows to {c}.",
        "A printer makes {b} {things} a minute, so after {a} minutes there are {c} in the tray.",
        "The garden has {a} beds and {b} {things} were planted in each one, which makes {c} plants.",
    ),
    "division": (
        "{who} shares {a} {things} fairly among {b} friends, and each friend receives {c}.",
        "A baker packs {a} {things} into bags of {b}, which fills exactly {c} bags with none left over.",
        "When {a} {things} are split evenly between {b} tables, every table gets {c}.",
        "{who} needs {a} {things} for a trip of {b} days and plans to use {c} on each day.",
        "A teacher hands out {a} {things} to {b} pupils so that every pupil has {c}.",
        "The {a} {things} from the harvest go into {b} equal crates, putting {c} in every crate.",
    ),
}
ARITHMETIC_TIPS = (
    "It helps to say the calculation out loud before writing anything down.",
    "Checking the answer with a different method catches most slips of the pen.",
    "Drawing the objects as little circles on paper makes the idea easy to see.",
    "Writing the numbers neatly in columns keeps the tens and the units apart.",
    "When the numbers get larger, the same rule still works, only with more steps.",
    "Most mistakes come from rushing, so take the steps one at a time and slowly.",
    "A number line drawn on the floor with chalk turns the calculation into a short walk.",
    "Estimating the answer first tells you at once whether the exact result is sensible.",
    "Children often find it easier when the story is about something they can hold in their hands.",
    "Swapping the order of the numbers is a good way to see which rules still hold.",
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
