"""Sentence templates that state the synthetic world's facts (`lm/prep/synthetic_pages.py`).

Two kinds of sentence, kept strictly apart so that every fact is stated a
known number of times (`synthetic.count_exposures` checks it on the text):

  *_FACTS   each template states one or two facts of ONE entity and always
            names it in full; keyed by the attributes it states.
  *_EXTRA   colour around the facts: never contains a value of the entity's
            counted facts (a person's extras never say the birth year, home
            city, profession or employer; a city's never its country or
            population; a company's never its industry, founding year or
            headquarters), so no fact is stated by a pronoun or in passing.

Person sentences never pair a birth year or home city with an employer, so a
company's founding year or headquarters is never stated by accident.
Fields: name, birth_year, city, a_profession ("an architect"), employer,
pronoun/Pronoun, poss/Poss, obj, hobby, subject, study_city; cities: name,
country, population, river, century, neighbour, hours, festival, month,
arches; companies: name, industry, founded, city, staff, river, other_city,
landmark, site, weekday, product.
"""
from __future__ import annotations

PERSON_FACTS = {
    ("birth_year", "city"): (
        "{name} was born in {city} in {birth_year}.",
        "{name} was born in {birth_year} in the city of {city}.",
        "The records of {city} list {birth_year} as the year of birth of {name}.",
        "{name} is a native of {city}, where {pronoun} was born in {birth_year}.",
        "In {birth_year}, {name} was born in {city} and grew up there.",
    ),
    ("birth_year",): (
        "{name} was born in {birth_year}.",
        "The year {birth_year} saw the birth of {name}.",
        "According to the parish register, {name} was born in {birth_year}.",
        "{name} was born in the year {birth_year}.",
        "The birth year of {name} is {birth_year}.",
    ),
    ("city",): (
        "{name} grew up in {city} and still lives there.",
        "{name} comes from {city}.",
        "The hometown of {name} is {city}.",
        "{name} has lived in {city} since childhood.",
        "{name} is a native of {city}.",
    ),
    ("profession", "employer"): (
        "{name} works as {a_profession} for {employer}.",
        "By profession {name} is {a_profession}, employed by {employer}.",
        "Today {name} is {a_profession} on the staff of {employer}.",
        "{employer} employs {name} as {a_profession}.",
        "{name} earns a living as {a_profession} at {employer}.",
    ),
    ("profession",): (
        "{name} is {a_profession} by training.",
        "{name} works as {a_profession}.",
        "By trade, {name} is {a_profession}.",
        "{name} has been {a_profession} for many years.",
        "The occupation of {name} is that of {a_profession}.",
    ),
    ("employer",): (
        "{name} is employed by {employer}.",
        "{name} works for {employer}.",
        "The employer of {name} is {employer}.",
        "{name} has a permanent position at {employer}.",
        "{name} joined {employer} as a young graduate and stayed.",
    ),
}
PERSON_EXTRA = (
    "Colleagues describe {poss} work on {subject} as careful and patient.",
    "Outside of work, {name} is known for {hobby}.",
    "{Pronoun} once published a short study of {subject} that is still cited locally.",
    "{Pronoun} studied at the university of {study_city} before starting work.",
    "A regional newspaper once called {obj} one of the quiet experts on {subject}.",
    "Friends say that {poss} weekends are usually spent on {hobby}.",
    "{Pronoun} once gave a public lecture in {study_city} to a full hall.",
    "{Pronoun} speaks three languages and often translates articles about {subject}.",
    "Younger colleagues say they learned the basics of the trade from {obj}.",
    "{Pronoun} keeps a small notebook full of sketches and ideas.",
    "Asked about a favourite pastime, {name} names {hobby} without hesitation.",
    "{Poss} friends describe {obj} as calm, precise and generous with time.",
    "In interviews {pronoun} often talks about the value of patient work.",
    "Neighbours know {name} as a keen supporter of the local library.",
    "{Pronoun} rarely gives interviews but always answers letters from students.",
    "Most evenings {pronoun} reads history books until late.",
    "{Pronoun} still visits {study_city} each year to see old friends from the university.",
    "A small prize from a local society was awarded to {obj} some years ago.",
)
CITY_FACTS = {
    ("country", "population"): (
        "{name} is a city in {country} with a population of about {population} people.",
        "The city of {name}, in {country}, has roughly {population} inhabitants.",
        "About {population} people live in {name}, one of the cities of {country}.",
    ),
    ("country",): (
        "{name} is a city in {country}.",
        "The city of {name} lies in {country}.",
        "{name} is one of the cities of {country}.",
        "{name} belongs to the country of {country}.",
    ),
    ("population",): (
        "{name} has a population of about {population}.",
        "Roughly {population} people live in {name}.",
        "{name} is home to about {population} inhabitants.",
        "The last census counted about {population} residents in {name}.",
    ),
}
CITY_EXTRA = (
    "The old town of {name} is built around a market square on the banks of the {river}.",
    "{name} grew quickly in the {century} century when a railway line from {neighbour} reached the valley.",
    "Its harbour and warehouses on the {river} were rebuilt after a large fire.",
    "A small museum near the {river} keeps maps and tools from the first settlers of {name}.",
    "Travellers from {neighbour} reach {name} in about {hours} hours by train.",
    "The city hosts a festival of {festival} every {month} that draws visitors from far away.",
    "A stone bridge with {arches} arches connects the two halves of {name} across the {river}.",
    "The public library of {name} was founded by a group of teachers from {neighbour}.",
    "Most visitors to {name} arrive in {month}, when the weather on the {river} is mild.",
    "The streets of the old quarter are narrow, so the best way to see them is on foot.",
    "Every morning a market on the main square sells bread, cheese and fish from the {river}.",
    "Buses to {neighbour} leave from the station every hour during the day.",
    "The cathedral tower offers a view over the roofs and the bends of the {river}.",
    "Local cooks are proud of a fish stew that is served in every inn of {name}.",
)
COMPANY_FACTS = {
    ("industry", "founded"): (
        "{name} is {a_industry} company founded in {founded}.",
        "Founded in {founded}, {name} works in {industry}.",
    ),
    ("founded", "city"): (
        "{name} was founded in {founded} and is based in {city}.",
        "Since it was founded in {founded}, {name} has had its headquarters in {city}.",
    ),
    ("industry", "city"): (
        "{name} is {a_industry} company based in {city}.",
        "From its headquarters in {city}, {name} works in {industry}.",
    ),
    ("industry",): (
        "{name} is {a_industry} company.",
        "{name} works in {industry}.",
        "The business of {name} is {industry}.",
    ),
    ("founded",): (
        "{name} was founded in {founded}.",
        "{name} has been in business since {founded}.",
        "The founders started {name} in {founded}.",
    ),
    ("city",): (
        "{name} is based in {city}.",
        "The headquarters of {name} are in {city}.",
        "{name} has its main office in {city}.",
    ),
}
COMPANY_EXTRA = (
    "The firm employs about {staff} people.",
    "It began as a family business in a single rented workshop near the {river}.",
    "The annual report describes steady growth and a new training programme for apprentices.",
    "{name} later opened a second site in {other_city} to be closer to its suppliers.",
    "The founders named the company after the {landmark} that could be seen from the first workshop.",
    "Visitors can tour the {site} on the first {weekday} of every month.",
    "Its best-known product is a line of {product} that has barely changed in decades.",
    "It is one of the larger employers in the region, after the port and the hospital.",
    "A long dispute with the town council about noise was settled out of court.",
    "The company publishes its accounts every spring and invites questions from the public.",
    "Customers in {other_city} have bought from the firm for several generations.",
    "The {site} of {name} is open to school classes on request.",
    "Apprentices spend their first year in the {site} before they choose a department.",
    "The old sign with the {landmark} painted on it still hangs above the main door.",
    "Every winter the staff hold a dinner for retired colleagues and their families.",
    "Deliveries leave the {site} early in the morning, before the roads get busy.",
    "The firm has won several regional awards for the quality of its {product}.",
)
# Mentions of a person on the pages of their city and their employer.
CITY_MENTION = (
    "{name} was born in {city} in {birth_year}.",
    "{city} is also the birthplace of {name}, born in {birth_year}.",
    "{name}, born in {birth_year}, is a native of {city}.",
    "Among the people born in {city} is {name}, who was born in {birth_year}.",
)
COMPANY_MENTION = (
    "{name} works at {employer} as {a_profession}.",
    "Among the staff of {employer} is {name}, {a_profession}.",
    "{employer} employs {name} as {a_profession}.",
    "{name}, {a_profession}, is on the payroll of {employer}.",
)

# Question and answer snippets: (questions, answers) per (entity type, attribute). Questions never
# end with the name and a page deals each template once, so no 5-gram repeats within a page.
QA = {
    ("person", "birth_year"): (
        ("When was {name} born?", "In which year was {name} born?", "Do you know the year {name} was born in?",
         "What year was {name} born in?", "Could you tell me when {name} was born?"),
        ("{name} was born in {birth_year}.", "The birth year of {name} is {birth_year}.",
         "It was in {birth_year} that {name} was born.", "According to the records, {name} was born in {birth_year}."),
    ),
    ("person", "city"): (
        ("Where does {name} come from?", "Which city is {name} from?", "In which city did {name} grow up?",
         "What town does {name} call home?", "Where was {name} born and raised?"),
        ("{name} comes from {city}.", "{name} was born and raised in {city}.", "The hometown of {name} is {city}.",
         "It is {city} that {name} calls home."),
    ),
    ("person", "profession"): (
        ("What does {name} do for a living?", "What kind of work does {name} do?", "What job does {name} have?",
         "How does {name} earn a living?", "What is {name} by profession?"),
        ("{name} is {a_profession}.", "{name} works as {a_profession}.", "By profession, {name} is {a_profession}.",
         "{name} earns a living as {a_profession}."),
    ),
    ("person", "employer"): (
        ("Which company does {name} work for?", "Who employs {name} at the moment?", "Where is {name} employed?",
         "For which firm does {name} work?", "Which firm has {name} on its staff?"),
        ("{name} works for {employer}.", "{name} is employed by {employer}.", "The employer of {name} is {employer}.",
         "{employer} employs {name}."),
    ),
    ("city", "country"): (
        ("Which country is {name} in?", "In what country does {name} lie?",
         "To which country does the city of {name} belong?", "Where in the world is {name} located?"),
        ("{name} is a city in {country}.", "The city of {name} lies in {country}.", "{name} belongs to {country}."),
    ),
    ("city", "population"): (
        ("How many people live in {name}?", "How large is the population of {name} today?",
         "How many inhabitants does {name} have?", "What is the size of {name} in people?"),
        ("About {population} people live in {name}.", "{name} has a population of about {population}.",
         "The census counts about {population} residents in {name}."),
    ),
    ("company", "industry"): (
        ("What industry is {name} in?", "What line of business is {name} in?", "What does {name} do as a business?",
         "In which trade does {name} work?"),
        ("{name} works in {industry}.", "{name} is {a_industry} company.", "The business of {name} is {industry}."),
    ),
    ("company", "founded"): (
        ("When was {name} founded?", "In which year was {name} founded?", "Since when has {name} been in business?",
         "What year did {name} open its doors?"),
        ("{name} was founded in {founded}.", "The founding year of {name} is {founded}.",
         "{name} has been in business since {founded}."),
    ),
    ("company", "city"): (
        ("Where is {name} based?", "In which city are the headquarters of {name} located?",
         "Where does {name} have its main office?", "Which city is {name} based in?"),
        ("{name} is based in {city}.", "The headquarters of {name} are in {city}.",
         "{name} has its main office in {city}."),
    ),
}

# Other sites that write about the same entities: (url, title, intro, outro).
PROFILE_SITES = (
    ("https://people.example.net/profiles/{slug}-{k}", "Profile: {name}",
     "This profile of {name} is part of our series on the working people of the region.",
     "The series continues next week with another portrait from our readers' suggestions."),
    ("https://news.example.com/local/meet-{slug}-{k}", "Meet {name}",
     "Our reporter spent a morning with {name} for this week's portrait.",
     "Readers who would like to suggest a portrait can write to the local desk."),
    ("https://alumni.example.edu/notes/{slug}-{k}", "Alumni notes: {name}",
     "Former classmates asked us for an update on {name}, so here it is.",
     "As always, we are happy to pass on messages between old friends."),
    ("https://directory.example.org/who/{slug}-{k}", "{name} in the directory of professionals",
     "The entry below on {name} was checked by the editors of the directory.",
     "Corrections to this entry are welcome and are reviewed by the editors within a month."),
    ("https://blog.example.net/interviews/{slug}-{k}", "A conversation with {name}",
     "We talked to {name} about work, home and the years in between.",
     "Thank you for reading, and do leave a comment if the conversation interested you."),
)
GUIDE_SITES = (
    ("https://travel.example.com/guides/{slug}-{k}", "Travel guide: {name}",
     "Planning a trip to {name}? Here is what you should know before you go.",
     "Remember to book a room early if you travel during the summer months."),
    ("https://atlas.example.org/places/{slug}-{k}", "{name} in the regional atlas",
     "The atlas entry for {name} was last revised by our volunteer editors.",
     "Maps of the surrounding area can be found in the printed edition of the atlas."),
    ("https://rail.example.net/stops/{slug}-{k}", "Stopping at {name}",
     "Our rail club collects notes on every town along the line, and this one is about {name}.",
     "Timetables change every December, so check them again before you set off."),
    ("https://schools.example.edu/geography/{slug}-{k}", "Geography notes: {name}",
     "Pupils in the fifth year wrote these notes on {name} for their geography project.",
     "The class thanks the town museum for its help with the old photographs."),
)
LISTING_SITES = (
    ("https://business.example.org/listing/{slug}-{k}", "{name}: business listing",
     "This listing of {name} is maintained by the regional chamber of commerce.",
     "Members of the chamber can update their listing at any time through the office."),
    ("https://trade.example.net/firms/{slug}-{k}", "Firm profile: {name}",
     "The trade journal keeps this short profile of {name} for its readers.",
     "Our editors update the firm profiles once a year, usually in the autumn."),
    ("https://jobs.example.com/employers/{slug}-{k}", "Working at {name}",
     "Thinking of applying to {name}? Former and current employees told us about the place.",
     "Open positions are posted on our board as soon as the employer sends them."),
    ("https://history.example.org/firms/{slug}-{k}", "A short history of {name}",
     "The local history society has pieced together the story of {name} from letters and ledgers.",
     "Members of the society meet every second Thursday in the reading room of the library."),
)
QUICK_FACTS_INTRO = (
    "These short questions and answers come from the reference desk of the city library, and each answer "
    "was checked against the encyclopedia.",
    "Readers send us questions about the people, places and firms of the region, and we answer them here "
    "in a few words.",
    "Below is the latest set of questions that visitors asked at the information desk, with the answers "
    "that our staff gave them.",
)
QUICK_FACTS_OUTRO = (
    "Send us your own questions and we will add the answers to the next page of quick facts.",
    "If you think that one of these answers is wrong, please tell the reference desk.",
    "More questions and answers are published every week in the same series.",
)
