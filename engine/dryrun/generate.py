"""Synthetic e-commerce event logs in Segment-spec JSONL, for the dry-run, benchmarks and demos.

    journeys generate --events 1000000 --users 100000 --seed 1 --out events.jsonl
    python benchmarks/generate.py --events 1000000 --users 100000 --seed 1 --out /tmp/events.jsonl

One JSON object per line, shaped like Segment's HTTP API payloads (`type`, `messageId`,
`timestamp` in ISO-8601 UTC with `Z`, `userId` and/or `anonymousId`, `event`, `properties`,
`traits`, `context.timezone`), sorted by timestamp. The shop's journeys and segments
(examples/shop/journeys) all find users in it:

- visitors arrive anonymous and browse: `page` calls (properties.category "home", "events",
  "catalog", ...), "Product Viewed", "Product Added", "Checkout Started", "Order Completed"
  (coupon null or a code), "Payment Failed" followed more often than not by a retried order;
- returning visitors mostly identify (passers-by rarely do): some before their first event, most
  in the middle of a session (often at checkout), so anonymous history has to be stitched; some
  also send an `alias`; a few come back on a new device (a second anonymousId, then a login);
- returning users have several sessions over days or weeks, at plausible local hours (an evening
  peak, some after 21:00) with more on weekends, in time zones around the world, DST ones included;
- identified users react to campaigns: "Push Opened" / "Push Dismissed" {campaign_type},
  "Email Opened", "Email Clicked", now and then "Unsubscribed" {channel: "email"};
- personas make every segment non-empty: hot browsers (>= 5 views a week), night shoppers
  (orders after 21:00), weekend discount lovers, promo-dependent big-cart shoppers (orders only
  with a coupon), push-fatigued users (dismiss every push) and event-page lookers.

Deterministic: the same arguments give a byte-identical file (one `random.Random(seed)`, no wall
clock, no set order; gzip output carries no name or mtime). `--events` is a target: the total
lands within a fraction of a percent of it, except when there are so few events per user that
every user's single session already exceeds it. Fast: precomputed JSON fragments (serialised
once with orjson), timestamps from a minute table, one integer sort, large writes.
`messageId` is f"g{seed}-{n}" with n the message's number in generation order (unique, stable).
Every user visits at least once, so with fewer than about 3 events per user the total exceeds
`--events`.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gzip
import math
import random
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator
from zoneinfo import ZoneInfo

import orjson

DEFAULT_START = "2026-03-02T00:00:00Z"
DEFAULT_DAYS = 28
DEFAULT_EVENTS = 100_000
DEFAULT_USERS = 10_000

# (zone, share of users). DST zones on both hemispheres: the US changes on 8 March 2026, Europe on
# 29 March, Sydney on 5 April; Istanbul, Tokyo, Kolkata (+05:30) and Sao Paulo keep one offset.
ZONES: tuple[tuple[str, float], ...] = (
    ("Europe/Berlin", 24), ("Europe/Istanbul", 12), ("America/New_York", 14),
    ("Europe/London", 9), ("America/Los_Angeles", 7), ("America/Sao_Paulo", 7),
    ("Asia/Tokyo", 6), ("Australia/Sydney", 5), ("Asia/Kolkata", 5), ("Europe/Paris", 6),
    ("UTC", 5),
)

# Page calls: (properties.category, page name, paths). "events" pages are the shop's event tickets.
PAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("home", "Home", ("/",)),
    ("events", "Events", ("/events", "/events/jazz-night", "/events/cooking-class", "/events/city-run",
                          "/events/wine-tasting", "/events/open-air-cinema")),
    ("catalog", "Catalog", ("/c/electronics", "/c/fashion", "/c/home", "/c/sports", "/c/beauty", "/c/books")),
    ("deals", "Deals", ("/deals", "/deals/weekend")),
    ("search", "Search", ("/search?q=lamp", "/search?q=shoes", "/search?q=headphones", "/search?q=gift")),
    ("account", "Account", ("/account", "/account/orders")),
    ("help", "Help", ("/help/shipping", "/help/returns")),
)
PAGE_WEIGHTS = (30, 14, 30, 10, 10, 4, 2)

# Product categories: (name, price median, price spread (log sd), nouns)
CATEGORIES: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("electronics", 180.0, 0.9, ("Headphones", "Speaker", "Smartwatch", "Tablet", "Camera", "Charger", "Keyboard")),
    ("fashion", 60.0, 0.6, ("Sneakers", "Jacket", "Dress", "Scarf", "Boots", "Backpack", "Sunglasses")),
    ("home", 70.0, 0.8, ("Vase", "Lamp", "Rug", "Armchair", "Cushion", "Coffee Maker", "Knife Set")),
    ("outdoor", 90.0, 0.8, ("Tent", "Sleeping Bag", "Hiking Poles", "Camping Stove", "Kayak Paddle")),
    ("beauty", 30.0, 0.5, ("Serum", "Perfume", "Face Cream", "Hair Dryer", "Lip Balm")),
    ("books", 18.0, 0.4, ("Novel", "Cookbook", "Travel Guide", "Notebook", "Art Book")),
    ("events", 45.0, 0.5, ("Jazz Night Ticket", "Cooking Class", "City Run Entry", "Wine Tasting", "Cinema Pass")),
)
ADJECTIVES = ("Classic", "Nordic", "Urban", "Eco", "Pro", "Mini", "Deluxe", "Vintage", "Smart", "Cozy",
              "Alpine", "Coastal", "Studio", "Everyday", "Signature")
N_PRODUCTS = 600

FIRST_NAMES = ("Anna", "Jonas", "Lea", "Lukas", "Zoë", "Jürgen", "Mia", "Noah", "Emma", "Liam", "Olivia",
               "Mehmet", "Ayşe", "Elif", "Can", "Yuki", "Haruto", "Sakura", "Chloe", "Jack", "Isla",
               "João", "Maria", "Lucas", "Beatriz", "Priya", "Arjun", "Sophie", "Hugo", "Camille", "Ava",
               "Ethan", "Grace", "Oliver", "Amelia", "Mateo", "Sofia", "Kenji", "Aiko", "Deniz")
LAST_NAMES = ("Müller", "Schmidt", "Yılmaz", "Kaya", "Smith", "Johnson", "Brown", "Silva", "Santos",
              "Tanaka", "Sato", "Martin", "Bernard", "Sharma", "Patel", "Wilson", "Taylor", "Costa",
              "Weber", "Fischer", "Demir", "Suzuki", "Dubois", "Walker")

COUPONS = ("COMEBACK10", "SPRING15", "WELCOME5", "THANKS15", "FLASH20")
COUPON_PERCENT = {"COMEBACK10": 10, "SPRING15": 15, "WELCOME5": 5, "THANKS15": 15, "FLASH20": 20}
FAIL_REASONS = ("card_declined", "insufficient_funds", "expired_card", "authentication_failed")
CAMPAIGN_TYPES = ("discount", "new_arrivals", "back_in_stock", "price_drop", "reminder")
CAMPAIGN_WEIGHTS = (35, 20, 15, 15, 15)

# Session start, local hour: quiet nights, a lunch bump and an evening peak, some after 21:00.
HOUR_WEIGHTS = (1.2, 0.6, 0.3, 0.2, 0.2, 0.3, 0.8, 1.8, 3.0, 3.5, 3.8, 4.0, 5.0, 4.8, 4.0, 4.0,
                4.2, 5.0, 6.5, 8.0, 8.5, 7.5, 5.5, 3.0)
NIGHT_HOUR_WEIGHTS = (0.5, 0.2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.3, 0, 0, 0, 0, 0.3, 0.5, 1, 1.5, 7, 7, 2)

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
_SHIFT = 28               # sort key: (ms since the window's first minute) << _SHIFT | generation index
_MASK = (1 << _SHIFT) - 1
_CHUNK = 1 << 16          # lines per write


@dataclass
class Summary:
    """What `generate` wrote: the number of messages and users, and a count per kind of message
    (the event name for `track`, else the type: "page", "identify", "alias")."""

    events: int
    users: int
    counts: dict[str, int] = field(default_factory=dict)
    identified_users: int = 0


def parse_start(value: str | datetime) -> datetime:
    """An ISO-8601 instant ("2026-03-02", "2026-03-02T00:00:00Z", "...+01:00"); naive means UTC."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def _dumps(obj) -> str:
    return orjson.dumps(obj).decode()


def _table(weights, size: int = 4096) -> list[int]:
    """A lookup table for weighted choice by `table[int(random() * len(table))]` (rounded shares)."""
    total = float(sum(weights))
    out: list[int] = []
    for i, w in enumerate(weights):
        out.extend([i] * round(w / total * size))
    return out


class _Shop:
    """Everything that does not depend on the seed: catalogue, page fragments, zone offsets."""

    def __init__(self, start_ms: int, days: int):
        crng = random.Random(20260302)  # the catalogue is the same shop whatever the seed
        self.products: list[tuple[str, str, str, float]] = []  # id, name, category, price
        for i in range(N_PRODUCTS):
            cat, median, spread, nouns = CATEGORIES[i % len(CATEGORIES)]
            price = median * math.exp(crng.gauss(0.0, spread))
            price = max(4.0, min(price, 2400.0))
            price = round(price) - 0.01 if price > 20 else round(price, 1) - 0.01
            name = f"{crng.choice(ADJECTIVES)} {crng.choice(nouns)}"
            self.products.append((f"p{1000 + i}", name, cat, round(price, 2)))
        pj = [(pid, name, cat, price) for pid, name, cat, price in self.products]
        self.view_props = [_dumps({"product_id": p, "name": n, "category": c, "price": pr}) for p, n, c, pr in pj]
        self.add_props = [_dumps({"product_id": p, "name": n, "category": c, "price": pr, "quantity": 1})
                          for p, n, c, pr in pj]
        self.prices = [p[3] for p in self.products]
        # popularity: Zipf-like over a shuffled catalogue
        order = list(range(N_PRODUCTS))
        crng.shuffle(order)
        weights = [0.0] * N_PRODUCTS
        for rank, idx in enumerate(order):
            weights[idx] = 1.0 / (rank + 8) ** 0.9
        self.popular = _table(weights, 16384)
        self.expensive = [i for i, p in enumerate(self.prices) if p >= 200]
        self.weekend_products = [i for i, p in enumerate(self.products) if p[2] in ("events", "outdoor", "fashion")]
        # page fragments: '"name":...,"properties":{...}' by page kind
        self.pages: list[list[str]] = []
        for cat, name, paths in PAGES:
            self.pages.append([f'"name":"{name}","properties":' + _dumps({"category": cat, "path": path})
                               for path in paths])
        self.page_table = _table(PAGE_WEIGHTS, 1000)
        self.hours = _table(HOUR_WEIGHTS, 2000)
        self.night_hours = _table(NIGHT_HOUR_WEIGHTS, 2000)
        self.zone_table = _table([w for _, w in ZONES], 1000)
        self.campaign_table = _table(CAMPAIGN_WEIGHTS, 100)
        # Times are integer milliseconds since `base`, the hour two days before the window, so that
        # a timestamp string is two table look-ups and a sort key one shift.
        self.base = (start_ms - 2 * DAY) // HOUR * HOUR
        n_hours = (days + 4) * 24
        stamps = [datetime.fromtimestamp((self.base + h * HOUR) / 1000, timezone.utc) for h in range(n_hours)]
        # UTC offset (ms) per zone per hour since base
        self.offsets: list[list[int]] = []
        for zone, _ in ZONES:
            tz = ZoneInfo(zone)
            self.offsets.append([int(t.astimezone(tz).utcoffset().total_seconds()) * 1000 for t in stamps])
        # timestamps: "YYYY-MM-DDTHH:MM:" per minute since base, "SS.mmmZ" per millisecond of a minute
        mm = [f"{m:02d}:" for m in range(60)]
        self.minutes = [prefix + m for prefix in (t.strftime("%Y-%m-%dT%H:") for t in stamps) for m in mm]
        millis = [f"{ms:03d}Z" for ms in range(1000)]
        self.seconds = [f"{sec:02d}." + ms for sec in range(60) for ms in millis]

    def utc(self, zone: int, local: int) -> int:
        """The instant (ms since base) of a local wall time in `zone` (ms since base, read as UTC)."""
        row = self.offsets[zone]
        return local - row[(local - row[local // HOUR]) // HOUR]

    def local(self, zone: int, t: int) -> int:
        """The local wall time in `zone` of the instant t (both ms since base)."""
        return t + self.offsets[zone][t // HOUR]


@functools.lru_cache(maxsize=4)
def _shop(start_ms: int, days: int) -> _Shop:
    return _Shop(start_ms, days)


def _ascii(name: str) -> str:
    """"Jürgen" -> "jurgen", "Yılmaz" -> "yilmaz": for e-mail addresses."""
    return unicodedata.normalize("NFKD", name.lower().replace("ı", "i")).encode("ascii", "ignore").decode()


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# personas (one per user at most): they make the shop's behavioural segments non-empty
PLAIN, HOT, NIGHT, WEEKEND, PROMO, FATIGUED, LOOKER = range(7)
# (persona, cumulative share of users)
PERSONA_SHARES = ((HOT, 0.07), (NIGHT, 0.10), (WEEKEND, 0.15), (PROMO, 0.19), (FATIGUED, 0.24), (LOOKER, 0.30))
# per persona: mean product views per session, P(add a viewed product), P(checkout | cart), P(order | checkout)
BEHAVIOUR = {
    PLAIN: (3.0, 0.18, 0.45, 0.55), HOT: (7.0, 0.12, 0.35, 0.45), NIGHT: (4.0, 0.5, 0.9, 0.9),
    WEEKEND: (4.0, 0.15, 0.4, 0.5), PROMO: (3.0, 0.35, 0.6, 0.4), FATIGUED: (3.0, 0.18, 0.45, 0.55),
    LOOKER: (2.0, 0.15, 0.3, 0.5),
}


def _bodies(events: int, users: int, seed: int, start: datetime, days: int,
            counts: dict[str, int]) -> tuple[list[int], list[bytes], int, int]:
    """Every message as one UTF-8 JSON line (no newline), in generation order, and a sort key for
    each: (ms since the shop's base << _SHIFT) | index. Returns (keys, lines, window end in ms since
    base, identified users); fills `counts`."""
    if events < 0 or users < 1 or days < 1:
        raise ValueError("need events >= 0, users >= 1 and days >= 1")
    if events + 20 * users > _MASK // 2:
        raise ValueError(f"too many events for one log: at most about {_MASK // 2:,}")
    start_ms = int(start.timestamp() * 1000)
    shop = _shop(start_ms, days)
    S = start_ms - shop.base            # the window, in ms since base
    E = S + days * DAY
    rng = random.Random(seed)
    rnd = rng.random
    minutes, seconds = shop.minutes, shop.seconds
    view_props, add_props, prices = shop.view_props, shop.add_props, shop.prices
    popular, n_popular = shop.popular, len(shop.popular)
    expensive, n_expensive = shop.expensive, len(shop.expensive)
    weekend_products, n_weekend = shop.weekend_products, len(shop.weekend_products)
    pages, page_table, n_page_table = shop.pages, shop.page_table, len(shop.page_table)
    campaign_table, offsets = shop.campaign_table, shop.offsets
    hour_table, night_table = shop.hours, shop.night_hours
    weekday0 = start.weekday()  # Mon=0, of the window's first day
    zone_ctx = [f'"context":{{"timezone":"{z}"}}' for z, _ in ZONES]
    SH = _SHIFT
    mid = f"g{seed}-"
    log = math.log

    keys: list[int] = []
    lines: list[bytes] = []
    kappend, lappend = keys.append, lines.append
    c_view = c_add = c_page = c_checkout = c_order = c_fail = c_identify = c_alias = 0
    c_push_open = c_push_dismiss = c_email_open = c_email_click = c_unsub = 0

    # ---- personas and activity weights: heavy-tailed, personas heavier so that their segments fill
    personas: list[int] = []
    weights: list[float] = []
    for _ in range(users):
        r = rnd()
        persona = PLAIN
        for p, share in PERSONA_SHARES:
            if r < share:
                persona = p
                break
        w = min(rng.paretovariate(1.6), 30.0)
        if persona in (HOT, NIGHT, WEEKEND, PROMO):
            w = w * 2.5 + 3.0
        elif persona == FATIGUED:
            w = w * 1.5 + 1.0
        personas.append(persona)
        weights.append(w)
    per_w = events / sum(weights)

    cum_target = 0.0
    identified_users = 0
    for u in range(users):
        persona = personas[u]
        cum_target += weights[u] * per_w
        budget = cum_target - len(keys)   # this user's share, less what earlier users overshot
        zone = shop.zone_table[int(rnd() * 1000)]
        row = offsets[zone]
        ctx = zone_ctx[zone]
        anon = _uuid(rng)
        user_id = f"user_{u + 1:06d}"
        first = FIRST_NAMES[int(rnd() * len(FIRST_NAMES))]
        last = LAST_NAMES[int(rnd() * len(LAST_NAMES))]
        traits = {"email": f"{_ascii(first)}.{_ascii(last)}{u + 1}@example.com", "first_name": first}
        if rnd() < 0.95:  # a few never tell us their timezone: the policy's default applies to them
            traits["timezone"] = ZONES[zone][0]
        traits_s = _dumps(traits)
        who_anon = f'"anonymousId":"{anon}",{ctx}}}'
        who_known = f'"userId":"{user_id}","anonymousId":"{anon}",{ctx}}}'

        views_mean, p_add, p_checkout, p_order = BEHAVIOUR[persona]
        session_len = 1.0 + 1.6 * views_mean   # messages per session, roughly
        # identity: 0 never, 1 before the first event, 2 in the middle of a session
        r = rnd()
        if persona in (NIGHT, WEEKEND, PROMO, FATIGUED):
            ident = 1 if r < 0.4 else 2
        elif budget < session_len:            # a passer-by: a short visit, rarely a sign-up
            ident = 0 if r < 0.8 else 2
            views_mean = max(0.6, (budget - 1.0) / 1.6)
        else:
            ident = 0 if r < 0.35 else (1 if r < 0.5 else 2)
        alias = ident == 2 and rnd() < 0.15

        n_sess = budget / session_len
        n_sess = max(1, int(n_sess) + (1 if rnd() < n_sess - int(n_sess) else 0))
        if persona == NIGHT and n_sess < 6:
            n_sess = 6
        hours = night_table if persona == NIGHT else hour_table
        n_hours = len(hours)
        # session days: the first anywhere (earlier for frequent visitors), the rest after it;
        # weekends are busier, weekend lovers hardly come on weekdays
        if n_sess == 1:
            first_day = int(rnd() * days)
        else:
            first_day = int(rnd() * days * max(0.15, 0.8 - n_sess * 0.05))
        starts = []
        for s in range(n_sess):
            while True:
                day = first_day if s == 0 else first_day + int(rnd() * (days - first_day))
                if (weekday0 + day) % 7 >= 5:
                    break
                if rnd() < (0.15 if persona == WEEKEND else 0.8):
                    break
            local = S + day * DAY + hours[int(rnd() * n_hours)] * HOUR + int(rnd() * HOUR)
            t0 = local - row[(local - row[local // HOUR]) // HOUR]
            if t0 < S:
                t0 += DAY
            starts.append(t0)
        starts.sort()
        if ident == 1:
            ident_sess = 0
        elif ident == 2:
            ident_sess = int(rnd() * min(n_sess, 2))
        else:
            ident_sess = n_sess
        new_device_sess = -1   # a later session on another device: new anonymousId, then a login
        if ident and n_sess - ident_sess >= 3 and rnd() < 0.2:
            new_device_sess = ident_sess + 2 + int(rnd() * (n_sess - ident_sess - 2))

        identified = False
        identified_at = 0
        who = who_anon
        cur_anon = anon
        last_end = 0
        p_page = 0.6 if persona == LOOKER else 0.3
        for s in range(n_sess):
            t = starts[s]
            if t < last_end + 30 * MINUTE:
                t = last_end + 30 * MINUTE
            if t >= E:
                break
            if s == new_device_sess and identified:
                cur_anon = _uuid(rng)
                who = who_anon = f'"anonymousId":"{cur_anon}",{ctx}}}'
                who_known = f'"userId":"{user_id}","anonymousId":"{cur_anon}",{ctx}}}'
                identified = False
                login_at = 1 + int(rnd() * 3)
            elif ident and not identified and s >= ident_sess:
                login_at = 0 if ident == 1 else 1 + int(rnd() * 5)
            else:
                login_at = -1
            n_views = int(-views_mean * log(1.0 - rnd()))
            if n_views > 25:
                n_views = 25
            cart_total = 0.0
            cart_items = 0
            step = 0
            kind = 1 if persona == LOOKER and rnd() < 0.7 else page_table[int(rnd() * n_page_table)]
            for v in range(n_views + 1):
                if 0 <= login_at <= step and not identified:
                    if alias and s == ident_sess:
                        lappend(f'{{"type":"alias","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                                f'"previousId":"{cur_anon}","userId":"{user_id}",{ctx}}}'.encode())
                        kappend(t << SH | len(keys))
                        c_alias += 1
                        t += 150
                    lappend(f'{{"type":"identify","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                            f'"traits":{traits_s},{who_known}'.encode())
                    kappend(t << SH | len(keys))
                    c_identify += 1
                    identified = True
                    if not identified_at:
                        identified_at = t
                    who = who_known
                    t += 2000 + int(rnd() * 20000)
                if v == 0 or rnd() < p_page:
                    if v:
                        kind = 1 if persona == LOOKER and rnd() < 0.5 else page_table[int(rnd() * n_page_table)]
                    plist = pages[kind]
                    lappend(f'{{"type":"page","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                            f'{plist[int(rnd() * len(plist))]},{who}'.encode())
                    kappend(t << SH | len(keys))
                    c_page += 1
                    step += 1
                    t += 3000 + int(rnd() * 40000)
                if v == n_views:
                    break
                if persona == PROMO and rnd() < 0.6:
                    prod = expensive[int(rnd() * n_expensive)]
                elif persona == WEEKEND and rnd() < 0.5:
                    prod = weekend_products[int(rnd() * n_weekend)]
                else:
                    prod = popular[int(rnd() * n_popular)]
                lappend(f'{{"type":"track","event":"Product Viewed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                        f'"properties":{view_props[prod]},{who}'.encode())
                kappend(t << SH | len(keys))
                c_view += 1
                step += 1
                t += 8000 + int(rnd() * 110000)
                price = prices[prod]
                if rnd() < (p_add if price < 200 or persona == PROMO else p_add * 0.5):
                    lappend(f'{{"type":"track","event":"Product Added","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                            f'"properties":{add_props[prod]},{who}'.encode())
                    kappend(t << SH | len(keys))
                    c_add += 1
                    step += 1
                    cart_total += price
                    cart_items += 1
                    t += 5000 + int(rnd() * 60000)
            if cart_items and rnd() < p_checkout:
                if not identified and ident == 2 and s >= ident_sess and rnd() < 0.8:
                    # a login at checkout: the session so far was anonymous
                    lappend(f'{{"type":"identify","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                            f'"traits":{traits_s},{who_known}'.encode())
                    kappend(t << SH | len(keys))
                    c_identify += 1
                    identified = True
                    if not identified_at:
                        identified_at = t
                    who = who_known
                    t += 5000 + int(rnd() * 30000)
                revenue = round(cart_total, 2)
                cart_id = f"c{seed}-{len(keys)}"
                lappend(f'{{"type":"track","event":"Checkout Started","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                        f'"properties":{{"revenue":{revenue},"cart_id":"{cart_id}","products":{cart_items}}},{who}'.encode())
                kappend(t << SH | len(keys))
                c_checkout += 1
                t += 30000 + int(rnd() * 150000)
                buys = rnd() < p_order
                if persona == PROMO:   # buys only with a code
                    coupon = COUPONS[int(rnd() * len(COUPONS))]
                else:
                    coupon = COUPONS[int(rnd() * len(COUPONS))] if rnd() < 0.15 else None
                if buys:
                    order_id = f"o{seed}-{len(keys)}"
                    if rnd() < 0.12:
                        reason = FAIL_REASONS[int(rnd() * len(FAIL_REASONS))]
                        lappend(f'{{"type":"track","event":"Payment Failed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                                f'"properties":{{"order_id":"{order_id}","reason":"{reason}","revenue":{revenue}}},{who}'.encode())
                        kappend(t << SH | len(keys))
                        c_fail += 1
                        t += 40000 + int(rnd() * 240000)
                        buys = rnd() < 0.6  # a retry with another card, or they give up
                    if buys:
                        if coupon is None:
                            paid, coupon_s = revenue, "null"
                        else:
                            paid, coupon_s = round(revenue * (100 - COUPON_PERCENT[coupon]) / 100, 2), f'"{coupon}"'
                        lappend(f'{{"type":"track","event":"Order Completed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                                f'"properties":{{"order_id":"{order_id}","revenue":{paid},"coupon":{coupon_s},"products":{cart_items}}},{who}'.encode())
                        kappend(t << SH | len(keys))
                        c_order += 1
                        t += 20000
            last_end = t
        if not identified_at:
            continue
        identified_users += 1

        # ---- reactions to campaigns, sent server-side (userId only) at local daytime hours
        if identified_at >= E - DAY:
            continue
        who_srv = f'"userId":"{user_id}",{ctx}}}'
        first_day = (identified_at + row[identified_at // HOUR] - S) // DAY   # local day of the identify
        if persona in (FATIGUED, WEEKEND) or rnd() < 0.4:
            if persona == FATIGUED:
                p_open, p_dismiss, gap = 0.0, 0.85, 4
            elif persona == WEEKEND:
                p_open, p_dismiss, gap = 0.55, 0.1, 4
            else:
                p_open, p_dismiss, gap = 0.15, 0.35, 6
            day = first_day + 1 + int(rnd() * gap)
            while day < days:
                local = S + day * DAY + (10 + int(rnd() * 9)) * HOUR + int(rnd() * HOUR)
                tp = local - row[(local - row[local // HOUR]) // HOUR]
                day += 1 + int(rnd() * gap)
                ctype = "discount" if persona == WEEKEND and rnd() < 0.6 else CAMPAIGN_TYPES[campaign_table[int(rnd() * 100)]]
                cid = f"cmp-{ctype}-{day // 3}"
                r = rnd()
                if r < p_open:
                    tp += 20000 + int(rnd() * 900000)
                    lappend(f'{{"type":"track","event":"Push Opened","messageId":"{mid}{len(keys)}","timestamp":"{minutes[tp // MINUTE]}{seconds[tp % MINUTE]}",'
                            f'"properties":{{"campaign_type":"{ctype}","campaign_id":"{cid}"}},{who_srv}'.encode())
                    kappend(tp << SH | len(keys))
                    c_push_open += 1
                    if rnd() < 0.5:  # the push brings them to the shop
                        for _ in range(1 + int(rnd() * 3)):
                            tp += 4000 + int(rnd() * 90000)
                            prod = weekend_products[int(rnd() * n_weekend)] if persona == WEEKEND else popular[int(rnd() * n_popular)]
                            lappend(f'{{"type":"track","event":"Product Viewed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[tp // MINUTE]}{seconds[tp % MINUTE]}",'
                                    f'"properties":{view_props[prod]},{who}'.encode())
                            kappend(tp << SH | len(keys))
                            c_view += 1
                elif r < p_open + p_dismiss:
                    tp += 5000 + int(rnd() * 1800000)
                    lappend(f'{{"type":"track","event":"Push Dismissed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[tp // MINUTE]}{seconds[tp % MINUTE]}",'
                            f'"properties":{{"campaign_type":"{ctype}","campaign_id":"{cid}"}},{who_srv}'.encode())
                    kappend(tp << SH | len(keys))
                    c_push_dismiss += 1
        day = first_day + 1 + int(rnd() * 4)
        while day < days:
            local = S + day * DAY + (9 + int(rnd() * 10)) * HOUR + int(rnd() * HOUR)
            te = local - row[(local - row[local // HOUR]) // HOUR]
            day += 3 + int(rnd() * 4)
            if rnd() >= 0.3:
                continue  # not opened
            ctype = CAMPAIGN_TYPES[campaign_table[int(rnd() * 100)]]
            cid = f"cmp-{ctype}-{day // 3}"
            te += 60000 + int(rnd() * 6 * HOUR)
            lappend(f'{{"type":"track","event":"Email Opened","messageId":"{mid}{len(keys)}","timestamp":"{minutes[te // MINUTE]}{seconds[te % MINUTE]}",'
                    f'"properties":{{"campaign_type":"{ctype}","campaign_id":"{cid}"}},{who_srv}'.encode())
            kappend(te << SH | len(keys))
            c_email_open += 1
            r = rnd()
            if r < 0.3:
                te += 5000 + int(rnd() * 120000)
                lappend(f'{{"type":"track","event":"Email Clicked","messageId":"{mid}{len(keys)}","timestamp":"{minutes[te // MINUTE]}{seconds[te % MINUTE]}",'
                        f'"properties":{{"campaign_type":"{ctype}","campaign_id":"{cid}","url":"https://shop.example.com/deals"}},{who_srv}'.encode())
                kappend(te << SH | len(keys))
                c_email_click += 1
            elif r < 0.36:
                te += 10000 + int(rnd() * 60000)
                lappend(f'{{"type":"track","event":"Unsubscribed","messageId":"{mid}{len(keys)}","timestamp":"{minutes[te // MINUTE]}{seconds[te % MINUTE]}",'
                        f'"properties":{{"channel":"email","campaign_id":"{cid}"}},{who_srv}'.encode())
                kappend(te << SH | len(keys))
                c_unsub += 1
                break  # no more emails

    counts.update({
        "page": c_page, "identify": c_identify, "alias": c_alias,
        "Product Viewed": c_view, "Product Added": c_add, "Checkout Started": c_checkout,
        "Order Completed": c_order, "Payment Failed": c_fail,
        "Push Opened": c_push_open, "Push Dismissed": c_push_dismiss,
        "Email Opened": c_email_open, "Email Clicked": c_email_click, "Unsubscribed": c_unsub,
    })
    return keys, lines, E, identified_users


# ---------------------------------------------------------------------- planted structure (--plant)
#
# With `plant=True` every person is an identified customer whose behaviour follows parameters
# drawn for them and written to the truth file, so that a test can check a model recovers them:
#
# - purchase cycle: orders form a renewal process with gamma gaps (shape CYCLE_SHAPE, mean
#   `cycle_days`); a third or so of the users lapse at `churn_at` (no sessions, no orders after it);
# - preferred hour: sessions, orders and opens happen around `best_hour_local` (in the hour
#   [h, h+1) of the user's own zone, spread ±1 h), PLANT_BACKGROUND of them at ordinary hours;
# - tastes: most sessions look at one favourite category (shares in `tastes`), and within it at one
#   cluster of CLUSTER_SIZE related products; an order holds 1-3 products of that cluster and the
#   next session returns to it half of the time, so item-to-item co-occurrence is informative;
# - fatigue: a campaign sends each subscriber "Push Delivered" / "Email Delivered" between
#   SEND_HOURS local, at a rate of their own that swings from week to week; a message is opened
#   (minutes later) with probability p0 * timing(hour) * exp(-k * max(0, n - c)) and unsubscribes
#   with probability u0 + u1 * max(0, n - c), where n is the number of messages of that channel the
#   user received in the last 7 days, this one included, and timing is 1 at the preferred hour,
#   TIMING_FLOOR far from it (so opens, too, gather around the preferred hour). `p_open` is p0
#   times the mean timing over the send hours; `best_cap` is the weekly cap that maximises
#   expected opens net of unsubscribes, m * (p_open * exp(-k * max(0, m - c)) -
#   UNSUBSCRIBE_COST * unsubscribe(m)) over m in 1..MAX_PLANTED_CAP (m messages evenly spread over
#   7 days each see n = m). Fatigue does not depend on the purchase cycle, so each model's planted
#   signal can be measured on its own.

CYCLE_SHAPE = 3.0            # gamma shape of the gaps between orders (1 = memoryless, higher = regular)
CLUSTER_SIZE = 6             # related products (a cluster) within a category
PLANT_BACKGROUND = 0.12      # share of sessions at an ordinary hour instead of the preferred one
UNSUBSCRIBE_COST = 20.0      # an unsubscribe costs this many opens (the subscriber's future value)
MAX_PLANTED_CAP = 15
PLANT_CHANNELS = (("push", "Push", 0.7), ("email", "Email", 0.9))   # channel, event prefix, share subscribed


def planted_best_cap(p0: float, k: float, c: int, u0: float, u1: float, *, cost: float = UNSUBSCRIBE_COST,
                     high: int = MAX_PLANTED_CAP) -> int:
    """The weekly cap (1..high) with the most expected opens net of unsubscribes, for the planted
    curves: argmax of m * (p0*exp(-k*max(0,m-c)) - cost*(u0 + u1*max(0,m-c))); ties to the lower cap."""
    best, best_value = 1, -math.inf
    for m in range(1, high + 1):
        excess = max(0, m - c)
        value = m * (p0 * math.exp(-k * excess) - cost * (u0 + u1 * excess))
        if value > best_value + 1e-12:
            best, best_value = m, value
    return best


SEND_HOURS = (8.0, 21.0)   # the campaign sends between these local hours, uniformly
TIMING_FLOOR, TIMING_WIDTH = 0.5, 1.5


def _timing(hour: float, best_hour: int) -> float:
    """How much more likely a message delivered at local `hour` is opened than one delivered
    far from the user's preferred hour: 1 at best_hour + 0.5, TIMING_FLOOR far from it."""
    d = abs(hour - best_hour - 0.5) % 24.0
    d = min(d, 24.0 - d)
    return TIMING_FLOOR + (1.0 - TIMING_FLOOR) * math.exp(-d * d / (2 * TIMING_WIDTH ** 2))


def _mean_timing(best_hour: int) -> float:
    """The mean of `_timing` over the campaign's send hours (what p0 becomes on average)."""
    lo, hi = SEND_HOURS
    steps = 260
    return sum(_timing(lo + (hi - lo) * (i + 0.5) / steps, best_hour) for i in range(steps)) / steps


def _poisson(rnd, lam: float) -> int:
    """A Poisson draw by counting unit-rate exponential arrivals (lam is at most a few dozen here)."""
    n, acc = 0, -math.log(1.0 - rnd())
    while acc < lam:
        n += 1
        acc -= math.log(1.0 - rnd())
    return n


def _planted_bodies(events: int, users: int, seed: int, start: datetime, days: int, counts: dict[str, int],
                    truth: list[dict] | None) -> tuple[list[int], list[bytes], int, int]:
    """The planted population's messages (see the section comment), like `_bodies`; one truth row
    per user is appended to `truth`. Its own random stream: the ordinary log does not change."""
    if events < 0 or users < 1 or days < 1:
        raise ValueError("need events >= 0, users >= 1 and days >= 1")
    if events + 400 * users > _MASK // 2:
        raise ValueError(f"too many events for one log: at most about {_MASK // 2:,}")
    start_ms = int(start.timestamp() * 1000)
    shop = _shop(start_ms, days)
    S = start_ms - shop.base
    E = S + days * DAY
    rng = random.Random(f"journeys-plant-{seed}")
    rnd, gauss = rng.random, rng.gauss
    minutes, seconds, offsets = shop.minutes, shop.seconds, shop.offsets
    products, prices, view_props, add_props = shop.products, shop.prices, shop.view_props, shop.add_props
    popular, n_popular = shop.popular, len(shop.popular)
    hour_table, n_hours = shop.hours, len(shop.hours)
    by_category = [[i for i in range(N_PRODUCTS) if i % len(CATEGORIES) == c] for c in range(len(CATEGORIES))]
    clusters = [[ids[j * CLUSTER_SIZE:(j + 1) * CLUSTER_SIZE if j + 1 < len(ids) // CLUSTER_SIZE else None]
                 for j in range(len(ids) // CLUSTER_SIZE)] for ids in by_category]   # the rest joins the last
    cat_names = [c[0] for c in CATEGORIES]
    zone_ctx = [f'"context":{{"timezone":"{z}"}}' for z, _ in ZONES]
    mid = f"g{seed}-"
    keys: list[int] = []
    lines: list[bytes] = []
    cnt: dict[str, int] = {}

    def emit(t: int, body: str, name: str) -> None:
        lines.append(f'{{"type":"track","event":"{name}","messageId":"{mid}{len(keys)}",'
                     f'"timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",{body}'.encode())
        keys.append(t << _SHIFT | len(keys))
        cnt[name] = cnt.get(name, 0) + 1

    weights = [min(rng.paretovariate(1.6), 30.0) for _ in range(users)]
    per_w = events / sum(weights)
    cum_target = 0.0
    for u in range(users):
        cum_target += weights[u] * per_w
        zone = shop.zone_table[int(rnd() * 1000)]
        row = offsets[zone]
        ctx = zone_ctx[zone]
        user_id = f"user_{u + 1:06d}"
        anon = _uuid(rng)
        first = FIRST_NAMES[int(rnd() * len(FIRST_NAMES))]
        last = LAST_NAMES[int(rnd() * len(LAST_NAMES))]
        traits = _dumps({"email": f"{_ascii(first)}.{_ascii(last)}{u + 1}@example.com", "first_name": first,
                         "timezone": ZONES[zone][0]})
        who = f'"userId":"{user_id}","anonymousId":"{anon}",{ctx}}}'
        who_srv = f'"userId":"{user_id}",{ctx}}}'
        best_hour = hour_table[int(rnd() * n_hours)]
        cycle = min(120.0, max(2.0, math.exp(gauss(math.log(14.0), 0.6))))
        life = -math.log(1.0 - rnd()) * 2.5 * days * DAY
        churn = S + int(life) if S + life < E else None
        stop = E if churn is None else churn
        n_fav = 2 if rnd() < 0.6 else 3
        favs = rng.sample(range(len(CATEGORIES)), n_fav)
        taste_w = [rng.gammavariate(1.0, 1.0) + 0.2 for _ in favs]
        total_w = sum(taste_w)
        taste_w = [w / total_w for w in taste_w]

        def local_to_utc(local: int, row: list[int] = row) -> int:
            return local - row[(local - row[local // HOUR]) // HOUR]

        def session_time(day: int, best_hour: int = best_hour) -> int:
            """A session start on local day `day`: around the preferred hour, now and then not."""
            if rnd() < PLANT_BACKGROUND:
                hour = hour_table[int(rnd() * n_hours)] + rnd()
            else:
                hour = min(23.99, max(0.0, best_hour + 0.5 + gauss(0.0, 0.6)))
            return local_to_utc(S + day * DAY + int(hour * HOUR))

        # ---- sessions: one per order of the purchase cycle, plus browsing from the event budget
        sessions: list[tuple[int, bool]] = []
        t_order = S + rnd() * cycle * DAY
        while t_order < stop:
            t = session_time(int((t_order - S) // DAY))
            if S <= t < stop:
                sessions.append((t, True))
            t_order += rng.gammavariate(CYCLE_SHAPE, cycle / CYCLE_SHAPE) * DAY
        active_days = max(1, (stop - S) // DAY)
        # ---- campaigns, per channel
        fatigue: dict[str, dict] = {}
        caps: dict[str, int] = {}
        for channel, prefix, share in PLANT_CHANNELS:
            subscribed = rnd() < share
            rate = 1.0 + 11.0 * rnd()
            p0 = (0.3 + 0.5 * rnd()) if channel == "push" else (0.25 + 0.45 * rnd())
            k = 0.25 + 0.55 * rnd()
            c = 1 + int(rnd() * 10)
            u0 = 0.0005 + 0.0015 * rnd()
            u1 = 0.002 + 0.008 * rnd()
            p0, k, u0, u1 = round(p0, 4), round(k, 4), round(u0, 5), round(u1, 5)
            p_open = round(p0 * _mean_timing(best_hour), 4)
            cap = planted_best_cap(p_open, k, c, u0, u1)
            caps[channel] = cap
            fatigue[channel] = {"subscribed": subscribed, "rate_per_week": round(rate, 3), "p0": p0, "p_open": p_open,
                                "k": k, "c": c, "u0": u0, "u1": u1, "best_cap": cap, "unsubscribed_at": None}
            if not subscribed:
                continue
            open_delay = (10 if channel == "push" else 45) * MINUTE   # mean minutes from delivery to open
            sends: list[int] = []
            for week in range((days + 6) // 7):
                for _ in range(_poisson(rnd, rate * math.exp(gauss(0.0, 0.8) - 0.32))):
                    day = week * 7 + int(rnd() * 7)
                    hour = int((SEND_HOURS[0] + (SEND_HOURS[1] - SEND_HOURS[0]) * rnd()) * HOUR)
                    if day >= days:  # the last week runs past the window (and the zone tables)
                        continue
                    t = local_to_utc(S + day * DAY + hour)
                    if S <= t < E:
                        sends.append(t)
            sends.sort()
            recent: list[int] = []
            for i, t in enumerate(sends):
                recent = [x for x in recent if x > t - 7 * DAY]
                recent.append(t)
                n = len(recent)
                ctype = CAMPAIGN_TYPES[shop.campaign_table[int(rnd() * 100)]]
                props = f'"properties":{{"campaign_type":"{ctype}","campaign_id":"cmp-{ctype}-{channel}-{i}"}},{who_srv}'
                emit(t, props, f"{prefix} Delivered")
                excess = max(0, n - c)
                t_after = t + 30_000 + int(rnd() * 120_000)
                if rnd() < p0 * math.exp(-k * excess) * _timing(((t + row[t // HOUR]) % DAY) / HOUR, best_hour):
                    t_open = t + 30_000 + int(-math.log(1.0 - rnd()) * open_delay)
                    emit(t_open, props, f"{prefix} Opened")
                    t_after = t_open + 5000
                    if channel == "email" and rnd() < 0.3:
                        emit(t_after, props, "Email Clicked")
                if rnd() < u0 + u1 * excess:
                    t_unsub = t_after + 10_000 + int(rnd() * 600_000)
                    emit(t_unsub, f'"properties":{{"channel":"{channel}","campaign_id":"cmp-{ctype}-{channel}-{i}"}},{who_srv}',
                         "Unsubscribed")
                    fatigue[channel]["unsubscribed_at"] = _iso_ms(shop.base + t_unsub)
                    break
        # browsing: this user's share of the event budget, what the orders and campaigns used
        # counted against it (about 5 messages a session); at least one visit every ten days
        budget = cum_target - len(keys) - 8 * len(sessions)
        n_browse = max(int(budget / 5.0), int(active_days / 10) + 1)
        for _ in range(n_browse):
            t = session_time(int(rnd() * active_days))
            if S <= t < stop:
                sessions.append((t, False))
        sessions.sort()
        # ---- the sessions in time order: identify first, then views, adds and orders of the focus
        t_ident = sessions[0][0] - 1000 if sessions else S + int(rnd() * DAY)
        lines.append(f'{{"type":"identify","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t_ident // MINUTE]}'
                     f'{seconds[t_ident % MINUTE]}","traits":{traits},{who}'.encode())
        keys.append(t_ident << _SHIFT | len(keys))
        cnt["identify"] = cnt.get("identify", 0) + 1
        focus: list[int] | None = None
        for t, buys in sessions:
            if focus is None or rnd() >= 0.5:
                r, cat = rnd(), favs[-1]
                if r < 0.85:
                    for ci, w in zip(favs, taste_w):
                        r -= 0.85 * w
                        if r < 0:
                            cat = ci
                            break
                else:
                    cat = int(rnd() * len(CATEGORIES))
                focus = clusters[cat][int(rnd() * len(clusters[cat]))]
            path = f"/c/{products[focus[0]][2]}"
            lines.append(f'{{"type":"page","messageId":"{mid}{len(keys)}","timestamp":"{minutes[t // MINUTE]}{seconds[t % MINUTE]}",'
                         f'"name":"Catalog","properties":{{"category":"catalog","path":"{path}"}},{who}'.encode())
            keys.append(t << _SHIFT | len(keys))
            cnt["page"] = cnt.get("page", 0) + 1
            for _ in range(1 + min(9, int(-math.log(1.0 - rnd()) * 2.0))):
                t += 8000 + int(rnd() * 90000)
                prod = focus[int(rnd() * len(focus))] if rnd() < 0.75 else popular[int(rnd() * n_popular)]
                emit(t, f'"properties":{view_props[prod]},{who}', "Product Viewed")
            if buys:
                basket = rng.sample(focus, 1 + (rnd() < 0.45) + (rnd() < 0.2))
                for prod in basket:
                    t += 5000 + int(rnd() * 40000)
                    emit(t, f'"properties":{add_props[prod]},{who}', "Product Added")
                revenue = round(sum(prices[p] for p in basket), 2)
                t += 30000 + int(rnd() * 120000)
                emit(t, f'"properties":{{"revenue":{revenue},"cart_id":"c{seed}-{len(keys)}","products":{len(basket)}}},{who}',
                     "Checkout Started")
                t += 20000 + int(rnd() * 90000)
                items = _dumps([{"product_id": products[p][0], "name": products[p][1], "category": products[p][2],
                                 "price": prices[p], "quantity": 1} for p in basket])
                emit(t, f'"properties":{{"order_id":"o{seed}-{len(keys)}","revenue":{revenue},"coupon":null,'
                        f'"products":{items}}},{who}', "Order Completed")
            elif rnd() < 0.2:
                t += 5000 + int(rnd() * 40000)
                emit(t, f'"properties":{add_props[focus[int(rnd() * len(focus))]]},{who}', "Product Added")
        if truth is not None:
            truth.append({
                "user_id": user_id, "timezone": ZONES[zone][0], "best_hour_local": best_hour,
                "cycle_days": round(cycle, 3), "cycle_shape": CYCLE_SHAPE,
                "churn_at": None if churn is None else _iso_ms(shop.base + churn),
                "tastes": {cat_names[ci]: round(w, 4) for ci, w in sorted(zip(favs, taste_w), key=lambda x: -x[1])},
                "fatigue": fatigue, "best_cap": caps,
            })
    counts.update(cnt)
    return keys, lines, E, users


def _iso_ms(ms: int) -> str:
    """Milliseconds since 1970 as the log's timestamp format, "2026-03-02T10:00:00.000Z"."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _kind(line: bytes) -> str:
    """"Product Viewed" for a track line, else its type ("page", "identify", "alias")."""
    obj = orjson.loads(line)
    return obj.get("event") or obj["type"]


def iter_chunks(*, events: int = DEFAULT_EVENTS, users: int = DEFAULT_USERS, seed: int = 1,
                start: str | datetime = DEFAULT_START, days: int = DEFAULT_DAYS,
                summary: Summary | None = None, plant: bool = False,
                truth: list[dict] | None = None) -> Iterator[bytes]:
    """The JSONL log as UTF-8 chunks of many lines (each chunk ends with a newline).

    Everything is generated before the first chunk (the log is sorted by timestamp; equal
    timestamps keep generation order). Messages past the end of the window are cut, as a log read
    at that moment would be. Pass a `Summary` to have it filled in. `plant=True` writes the planted
    population instead (see "planted structure"), its parameters appended to `truth`, one dict
    per user, when given."""
    start_dt = parse_start(start)
    counts: dict[str, int] = {}
    if plant or truth is not None:
        keys, lines, end, identified = _planted_bodies(events, users, seed, start_dt, days, counts, truth)
    else:
        keys, lines, end, identified = _bodies(events, users, seed, start_dt, days, counts)
    keys.sort()
    cut = bisect.bisect_left(keys, end << _SHIFT)
    if cut < len(keys):
        for k in keys[cut:]:   # sessions that ran past the end of the window
            counts[_kind(lines[k & _MASK])] -= 1
        del keys[cut:]
    if summary is not None:
        summary.events = len(keys)
        summary.users = users
        summary.counts = dict(counts)
        summary.identified_users = identified
    mask = _MASK
    for lo in range(0, len(keys), _CHUNK):
        chunk = [lines[k & mask] for k in keys[lo:lo + _CHUNK]]
        chunk.append(b"")
        yield b"\n".join(chunk)


def generate(out: str | Path | IO[bytes] = "-", *, events: int = DEFAULT_EVENTS, users: int = DEFAULT_USERS,
             seed: int = 1, start: str | datetime = DEFAULT_START, days: int = DEFAULT_DAYS,
             plant: bool = False, truth: str | Path | None = None) -> Summary:
    """Write a synthetic log to `out`: a path ("-" for stdout; gzip when it ends in .gz) or a binary
    file object. Returns what was written. `plant` (implied by `truth`) writes the planted
    population; `truth` is a path for its parameters, one JSON object per user, by user id."""
    summary = Summary(0, users)
    rows: list[dict] | None = [] if truth is not None else None
    chunks = iter_chunks(events=events, users=users, seed=seed, start=start, days=days, summary=summary,
                         plant=plant, truth=rows)
    if rows is not None:
        chunks = _then_write_truth(chunks, rows, Path(truth))
    if not isinstance(out, (str, Path)):
        for chunk in chunks:
            out.write(chunk)
        return summary
    if str(out) == "-":
        stream = sys.stdout.buffer
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()
        return summary
    path = Path(out)
    with open(path, "wb") as raw:
        if path.name.endswith(".gz"):
            # no file name and mtime 0 in the header: the same arguments give the same bytes
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                for chunk in chunks:
                    gz.write(chunk)
        else:
            for chunk in chunks:
                raw.write(chunk)
    return summary


def _then_write_truth(chunks: Iterator[bytes], rows: list[dict], path: Path) -> Iterator[bytes]:
    """The chunks, then the truth file written (its rows exist once generation has run)."""
    yield from chunks
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n")


def build_parser(prog: str = "journeys generate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Write a synthetic e-commerce event log (Segment-spec JSONL).")
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS, help=f"about this many messages (default {DEFAULT_EVENTS})")
    p.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"distinct people (default {DEFAULT_USERS})")
    p.add_argument("--seed", type=int, default=1, help="same seed and options, same bytes (default 1)")
    p.add_argument("--start", default=DEFAULT_START, help=f"first instant of the window, ISO-8601 (default {DEFAULT_START})")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"length of the window in days (default {DEFAULT_DAYS})")
    p.add_argument("--out", "-o", default="-", help='output file; "-" for stdout (default); gzip when it ends in .gz')
    p.add_argument("--plant", action="store_true",
                   help="identified customers with planted purchase cycles, preferred hours, tastes and fatigue")
    p.add_argument("--truth", default=None, metavar="FILE",
                   help="with the planted population (implies --plant): write its parameters, JSON lines per user")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: parse `argv`, write the log, print a summary to stderr. Exit 0, or 2
    on bad options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.events < 0 or args.users < 1 or args.days < 1:
        parser.error("--events must be >= 0, --users and --days >= 1")
    try:
        parse_start(args.start)
    except ValueError:
        parser.error(f"--start: not an ISO-8601 instant: {args.start!r}")
    began = time.perf_counter()
    summary = generate(args.out, events=args.events, users=args.users, seed=args.seed,
                       start=args.start, days=args.days, plant=args.plant, truth=args.truth)
    elapsed = time.perf_counter() - began
    if not args.quiet:
        where = "stdout" if args.out == "-" else args.out
        mix = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items(), key=lambda kv: -kv[1]) if v)
        print(f"wrote {summary.events} messages for {summary.users} users "
              f"({summary.identified_users} identified) to {where} in {elapsed:.2f}s\n  {mix}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
