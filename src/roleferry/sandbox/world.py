"""The synthetic world every simulated provider draws on, deterministic from a seed.

2,000+ companies are made up front (cheap: a name, a domain, a size, an address pattern);
their ~52,000 people are made on first use, so start-up stays well under a second.

Each provider knows a different, overlapping part of the truth, decided by a stable hash of
(seed, provider, company or person), never by generation order:

- Apollo knows 85% of companies and 90% of their people, but has the email of only 60%.
- Clay knows 80% of the companies Apollo lacks and 40% of the others, with 75% of emails.
- Hunter has learned the address pattern of 70% of domains (confidence 70-99); elsewhere it
  guesses `first.last` (confidence 30-60), which is wrong where the pattern differs.
- 3% of true addresses bounce (people who left): a provider may still return them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property

FIRST_NAMES = (
    "Aaliyah Aaron Abigail Adam Adrian Aisha Alan Alba Alex Alice Amara Amir Ana Andre Andrea "
    "Anika Ann Arjun Ava Ben Bianca Blake Bruno Caleb Camila Carla Carlos Chen Chloe Chris "
    "Clara Dana Daniel Dario Dev Diana Diego Dmitri Elena Eli Elif Emma Eric Erin Ethan Eva "
    "Farah Felix Fiona Gabriel Grace Hana Hannah Hugo Ian Ines Isaac Ivy Jack Jade James Jana "
    "Javier Jin Joel Jonas Julia Kai Kara Kenji Kiara Lara Leah Leo Lina Liam Lucas Luna Maya "
    "Marco Maria Mateo Mei Mia Mila Nadia Naomi Nina Noah Nora Olga Omar Oscar Paula Priya "
    "Rafael Ravi Rosa Ruth Sam Sara Sofia Tariq Theo Tom Uma Vera Victor Yara Yusuf Zoe"
).split()
LAST_NAMES = (
    "Abbott Adams Ahmed Alvarez Andersen Bailey Baker Banerjee Barros Becker Bell Berg Bianchi "
    "Brooks Brown Bui Campbell Carter Castro Chen Clark Cohen Collins Costa Cruz Dalton Das "
    "Davies Diaz Dubois Edwards Evans Fischer Fisher Flores Foster Garcia Gomez Gonzalez Gray "
    "Green Gupta Hall Hansen Harris Hayes Hill Hoffmann Howard Hughes Ivanova Jackson James "
    "Jensen Johnson Jones Kaur Keller Khan Kim Klein Kowalski Kumar Larsen Lee Lewis Lin Lopez "
    "Martin Meyer Miller Mitchell Moore Morales Morris Murphy Nakamura Nguyen Novak Okafor "
    "Olsen Ortiz Park Patel Perez Petrov Phillips Price Quinn Rahman Ramos Reed Reyes Richter "
    "Rivera Roberts Rossi Russo Sanchez Santos Sato Schmidt Schneider Shah Silva Singh Smith "
    "Sousa Stewart Suzuki Tanaka Taylor Thomas Torres Turner Wagner Walker Wang Ward Watson "
    "Weber Wilson Wong Wright Yamamoto Young Zhang Zimmer"
).split()
_SYLLABLES = (
    "ac ad al an ar as at ax be bo br ca ce ci co cr da de di do dr el en er ex fa fe fi fl fo "
    "ga ge gl go gr ha he hi ho in io ka ke ki ko la le li lo lu ma me mi mo na ne ni no nu "
    "or pa pe pi po pr qu ra re ri ro ru sa se si so st ta te ti to tr ul un ur va ve vi vo "
    "wa we xo ya yo za ze zi zo"
).split()
_SUFFIXES = ("", "", "ly", "io", "ify", "labs", "hq", "works", "base", "flow", "stack", "ware")
_TLDS = ("com", "com", "com", "io", "io", "co", "ai", "dev", "tech", "net")
INDUSTRIES = (
    "software",
    "fintech",
    "healthcare",
    "e-commerce",
    "logistics",
    "education",
    "cybersecurity",
    "media",
    "energy",
    "biotech",
    "marketing",
    "hr tech",
)
EMAIL_PATTERNS = ("{first}.{last}", "{first}", "{f}{last}", "{first}{l}", "{first}_{last}")
HUNTER_GUESS_PATTERN = "{first}.{last}"

# (title, seniority, department, weight): leaders are fewer than individual contributors.
ROLES: tuple[tuple[str, str, str, int], ...] = (
    ("Chief Executive Officer", "c_suite", "executive", 1),
    ("Chief Technology Officer", "c_suite", "engineering_technical", 1),
    ("VP Engineering", "vp", "engineering_technical", 2),
    ("VP Product", "vp", "product_management", 2),
    ("VP Sales", "vp", "sales", 2),
    ("VP Marketing", "vp", "marketing", 1),
    ("Head of Engineering", "head", "engineering_technical", 2),
    ("Head of Product", "head", "product_management", 2),
    ("Head of Talent", "head", "human_resources", 2),
    ("Head of Data", "head", "data_science", 1),
    ("Director of Engineering", "director", "engineering_technical", 3),
    ("Director of Product", "director", "product_management", 2),
    ("Director of Marketing", "director", "marketing", 2),
    ("Director of People", "director", "human_resources", 1),
    ("Engineering Manager", "manager", "engineering_technical", 5),
    ("Product Manager", "manager", "product_management", 5),
    ("Marketing Manager", "manager", "marketing", 3),
    ("Recruiting Manager", "manager", "human_resources", 2),
    ("Senior Software Engineer", "senior", "engineering_technical", 10),
    ("Software Engineer", "entry", "engineering_technical", 10),
    ("Data Scientist", "senior", "data_science", 4),
    ("Product Designer", "senior", "design", 4),
    ("Account Executive", "senior", "sales", 6),
    ("Sales Development Representative", "entry", "sales", 5),
    ("Customer Success Manager", "manager", "support", 4),
    ("Talent Acquisition Partner", "senior", "human_resources", 3),
    ("Recruiter", "entry", "human_resources", 3),
    ("Operations Analyst", "entry", "operations", 3),
)
_ROLE_WEIGHTS = [r[3] for r in ROLES]


def unit(seed: int, *parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for these parts; same inputs, same number."""
    digest = hashlib.blake2b(f"{seed}|{'|'.join(map(str, parts))}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def render_email(pattern: str, first: str, last: str, domain: str) -> str:
    local = pattern.format(first=first, last=last, f=first[:1], l=last[:1])
    return f"{local.lower()}@{domain}"


@dataclass(frozen=True)
class Person:
    id: str
    company_domain: str
    first_name: str
    last_name: str
    title: str
    seniority: str
    department: str
    linkedin_url: str
    email: str
    bounces: bool

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True)
class HunterView:
    """What Hunter returns for a person: pattern-based, so not always the truth."""

    email: str
    confidence: int
    correct: bool


@dataclass
class Company:
    index: int
    id: str
    name: str
    domain: str
    industry: str
    size: int
    email_pattern: str
    world: World = field(repr=False)

    @cached_property
    def people(self) -> list[Person]:
        return self.world.make_people(self)

    @property
    def estimated_num_employees(self) -> int:
        return self.size * 12 + self.index % 7


class World:
    """Companies by domain and id; people by company, by id; which provider knows what."""

    def __init__(self, seed: int = 7, companies: int = 2000) -> None:
        self.seed = seed
        self.companies: list[Company] = []
        self.by_domain: dict[str, Company] = {}
        self.company_by_id: dict[str, Company] = {}
        rng = random.Random(seed)
        for index in range(companies):
            company = self._make_company(rng, index)
            self.companies.append(company)
            self.by_domain[company.domain] = company
            self.company_by_id[company.id] = company

    def _make_company(self, rng: random.Random, index: int) -> Company:
        while True:
            stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
            suffix = rng.choice(_SUFFIXES)
            domain = f"{stem}{suffix}.{rng.choice(_TLDS)}"
            if domain not in self.by_domain:
                break
        return Company(
            index=index,
            id=hashlib.blake2b(f"{self.seed}|org|{index}".encode(), digest_size=12).hexdigest(),
            name=(stem + suffix).capitalize(),
            domain=domain,
            industry=rng.choice(INDUSTRIES),
            size=10 + rng.randint(0, 32),
            email_pattern=rng.choice(EMAIL_PATTERNS),
            world=self,
        )

    def make_people(self, company: Company) -> list[Person]:
        rng = random.Random(f"{self.seed}|people|{company.index}")
        people: list[Person] = []
        emails: set[str] = set()
        while len(people) < company.size:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = render_email(company.email_pattern, first, last, company.domain)
            if email in emails:
                continue
            emails.add(email)
            title, seniority, department, _ = rng.choices(ROLES, weights=_ROLE_WEIGHTS)[0]
            digest = hashlib.blake2b(f"{email}|{self.seed}".encode(), digest_size=10).hexdigest()
            pid = f"{company.index:04x}{digest}"
            people.append(
                Person(
                    id=pid,
                    company_domain=company.domain,
                    first_name=first,
                    last_name=last,
                    title=title,
                    seniority=seniority,
                    department=department,
                    linkedin_url=f"https://www.linkedin.com/in/{first.lower()}-{last.lower()}-{pid[:4]}{pid[-4:]}",
                    email=email,
                    bounces=unit(self.seed, "bounce", pid) < 0.03,
                )
            )
        return people

    @property
    def total_people(self) -> int:
        return sum(c.size for c in self.companies)

    def company(self, domain: str) -> Company | None:
        return self.by_domain.get(domain.strip().lower().removeprefix("www."))

    def person(self, person_id: str) -> Person | None:
        """People ids start with their company's index in hex, so a lookup makes one company."""
        try:
            company = self.companies[int(person_id[:4], 16)]
        except (ValueError, IndexError):
            return None
        return next((p for p in company.people if p.id == person_id), None)

    def find_person(self, domain: str, first_name: str, last_name: str) -> Person | None:
        company = self.company(domain)
        if company is None:
            return None
        first, last = first_name.strip().lower(), last_name.strip().lower()
        for person in company.people:
            if person.first_name.lower() == first and person.last_name.lower() == last:
                return person
        return None

    def person_by_linkedin(self, url: str) -> Person | None:
        """LinkedIn slugs end in the company index (4 hex) and 4 more hex characters."""
        slug = url.rstrip("/").rsplit("/", 1)[-1].lower()
        try:
            company = self.companies[int(slug[-8:-4], 16)]
        except (ValueError, IndexError):
            return None
        return next((p for p in company.people if p.linkedin_url.endswith(f"/{slug}")), None)

    def person_by_email(self, email: str) -> Person | None:
        domain = email.rsplit("@", 1)[-1]
        company = self.company(domain)
        if company is None:
            return None
        return next((p for p in company.people if p.email == email.lower()), None)

    # -- what each provider knows -------------------------------------------------------

    def apollo_knows_company(self, company: Company) -> bool:
        return unit(self.seed, "apollo-org", company.domain) < 0.85

    def apollo_knows(self, person: Person) -> bool:
        company = self.by_domain[person.company_domain]
        return self.apollo_knows_company(company) and unit(self.seed, "apollo", person.id) < 0.9

    def apollo_has_email(self, person: Person) -> bool:
        return self.apollo_knows(person) and unit(self.seed, "apollo-email", person.id) < 0.6

    def clay_knows_company(self, company: Company) -> bool:
        share = 0.4 if self.apollo_knows_company(company) else 0.8
        return unit(self.seed, "clay-org", company.domain) < share

    def clay_knows(self, person: Person) -> bool:
        company = self.by_domain[person.company_domain]
        return self.clay_knows_company(company) and unit(self.seed, "clay", person.id) < 0.85

    def clay_has_email(self, person: Person) -> bool:
        return self.clay_knows(person) and unit(self.seed, "clay-email", person.id) < 0.75

    def hunter_knows_pattern(self, company: Company) -> bool:
        return unit(self.seed, "hunter-pattern", company.domain) < 0.7

    def hunter_lists(self, person: Person) -> bool:
        """Whether Hunter's domain search has found this person's address on the web."""
        company = self.by_domain[person.company_domain]
        return self.hunter_knows_pattern(company) and unit(self.seed, "hunter", person.id) < 0.5

    def hunter_view(self, company: Company, first: str, last: str) -> HunterView:
        """Hunter's email-finder answer for a name at a company: a pattern applied."""
        known = self.hunter_knows_pattern(company)
        pattern = company.email_pattern if known else HUNTER_GUESS_PATTERN
        email = render_email(pattern, first, last, company.domain)
        spread = unit(self.seed, "hunter-score", company.domain, first, last)
        confidence = int(70 + 29 * spread) if known else int(30 + 30 * spread)
        truth = render_email(company.email_pattern, first, last, company.domain)
        return HunterView(email=email, confidence=confidence, correct=email == truth)

    def knowledge(self, person: Person) -> dict[str, object]:
        company = self.by_domain[person.company_domain]
        hunter = self.hunter_view(company, person.first_name, person.last_name)
        return {
            "apollo": {
                "known": self.apollo_knows(person),
                "has_email": self.apollo_has_email(person),
            },
            "clay": {"known": self.clay_knows(person), "has_email": self.clay_has_email(person)},
            "hunter": {
                "listed": self.hunter_lists(person),
                "email": hunter.email,
                "confidence": hunter.confidence,
                "correct": hunter.correct,
            },
        }
