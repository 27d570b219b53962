"""The catalogue of diagnostic codes: a stable code, a title and the long explanation that
`journeys explain CODE` prints. Codes are never reused for a different problem."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str


_CATALOGUE = [
    Code("J000", "internal error", "The checker itself failed on this file. This is a bug in Journeys, not in your file: please report it with the file attached."),
    Code("J001", "syntax error", """The file does not follow the grammar at this point.

The message says what was found and the help line what the language expects there. Every statement
starts with a keyword and blocks use braces:

    journey "Browse abandonment" {
      entry when event "Product Viewed" as viewed
      wait 1h
      send email "browse_abandon"
    }"""),
    Code("J002", "unterminated string", 'A string starts with `"` but the line ends before the closing `"`. Strings cannot span lines.'),
    Code("J003", "unknown keyword", """A word stands where the language expects a keyword, and it looks like a misspelling of one.

    sned email "welcome"      # error[J003]: did you mean `send`?"""),
    Code("J004", "not a text file", "Journey files are UTF-8 text. The file holds bytes that are not UTF-8 (or a NUL byte): it may be binary, or saved in another encoding."),
    Code("J005", "file too large", "A journey file larger than 1 MiB is refused before it is parsed. Split the journeys into several files."),
    Code("J006", "nesting too deep", "Brackets or expressions are nested deeper than the checker follows (64 brackets, 200 levels of expression). No real journey needs that: split conditions into named segments."),
    Code("J007", "empty file", "The file declares nothing. This is a warning: delete the file or add a journey, a segment or a policy."),
    Code("J008", "unreadable file", "The file could not be read (permissions, a broken link, a directory named like a file)."),
    Code("J010", "unknown segment", """A condition, an entry or an exit names a segment that no file declares.

    segment "recent_browsers" = happened(event "Product Viewed", last 7d)
    ... user in segment "recent_browsers" ..."""),
    Code("J011", "unknown template", "A `send` names a template that has no file: `send email \"NAME\"` reads `templates/email/NAME.j2`, `send push \"NAME\"` reads `templates/push/NAME.j2`."),
    Code("J012", "unknown audience", "An `add user to audience` or `remove user from audience` names an audience that journeys.toml does not declare under `[audiences.NAME]`."),
    Code("J013", "unknown webhook", "A `webhook` step names a webhook that journeys.toml does not declare under `[webhooks.NAME]`."),
    Code("J014", "unknown connector", "A `send ... via \"NAME\"` or an audience's `sync` list names a connector that journeys.toml does not declare under `[connectors.NAME]`, or the connector serves another channel."),
    Code("J015", "unknown channel", "The channel of a `send`, a `cap` or an expectation is not one the engine knows. Sendable channels: email, push, sms. A cap can also count `ads`, `webhook` and `all`."),
    Code("J016", "unknown name", """A bare name in a condition means an event property inside `event "X" where ...`, or an
event named with `as` in the entry elsewhere. This name is neither.

    entry when event "Product Viewed" as viewed
    send email "browse_abandon" with { product: viewed.name }   # not: product: name"""),
    Code("J017", "unknown function", "The condition calls a function that does not exist. `journeys explain J017` lists none; docs/language.md lists them all: count, happened, sum, avg, last, days_since, lower, upper, len, contains, starts_with, coalesce, round, abs."),
    Code("J018", "wrong arguments", """A function got the wrong number or the wrong kind of arguments. History functions take an
event match first and a window last:

    count(event "Product Viewed", last 7d) >= 5
    sum(event "Order Completed", revenue, last 30d)"""),
    Code("J019", "unknown timezone", "The timezone is not an IANA zone name such as `Europe/Istanbul` or `America/New_York`."),
    Code("J020", "segment refers to itself", "A segment's condition uses the segment itself, directly or through other segments. It could never be evaluated."),
    Code("J021", "duplicate journey", "Two journeys have the same name (or names that differ only in case and punctuation, which would give them the same step paths). Journey names identify journeys in the store, in reports and in traces: they must be unique in a project."),
    Code("J022", "duplicate segment", "Two segments have the same name. Segment names must be unique in a project."),
    Code("J023", "more than one policy", "A project has at most one `policy` block; merge them."),
    Code("J024", "duplicate declaration", "A journey declares the same thing twice (two entries, two reenter rules, two goals of one name, two quiet hours). Keep one."),
    Code("J025", "missing entry", "A journey without an `entry` can never start. Add one: `entry when event \"Product Viewed\"`."),
    Code("J026", "declaration after a step", "Declarations (entry, exit, reenter, goal, cap, quiet hours, on exit) come before the first step, so that a reader sees the rules of a journey before its flow."),
    Code("J027", "not allowed here", "Some steps cannot stand everywhere: `on exit` runs instantly when a journey ends, so it cannot wait, branch on events or exit again."),
    Code("J030", "split does not sum to 100 %", """The shares of a split, control group included, must add up to exactly 100 %.

    split {
      45% "discount" { send email "welcome_discount" }
      45% "thanks"   { send email "welcome_thanks" }
      10% control
    }"""),
    Code("J031", "duration without a unit", "A duration needs a unit: `30s`, `15m`, `2h`, `3d`, `1w`. There are no months or years: their length varies; write `30d` or `52w`."),
    Code("J032", "time of day out of range", "A time of day is `HH:MM` with hours 0-23 and minutes 0-59."),
    Code("J033", "invalid schedule", "The cron expression or the day of an `entry every DAY at TIME` is not valid. Cron has five fields: minute hour day-of-month month day-of-week, e.g. `0 10 * * MON`."),
    Code("J034", "comparison that can never be true", "The two sides of the comparison can never be equal or ordered: a text compared with a number, a duration with a time of day. Check the quotes: `price >= \"200\"` compares with a text."),
    Code("J035", "template variable not provided", """The template uses a variable that the send cannot provide. A template sees `user`, `event`,
the events named with `as`, `journey`, the keys of `with {...}`, and in email `unsubscribe_url`.
Pass the value with `with { product: viewed.name }`, or give it a default:
`{{ product | default("our picks") }}`."""),
    Code("J036", "invalid template", "The template's front matter is not YAML between `---` lines, or misses a required field (email: subject, from; push: title), or its Jinja2 body has a syntax error."),
    Code("J037", "duplicate split arm", "Two arms of one split have the same name; arm names appear in step paths and reports."),
    Code("J038", "invalid percentage", "A split share is written with a `%` sign and must be more than 0: `45% \"discount\" { ... }`."),
    Code("J039", "reenter needs a duration", "`reenter after` needs a duration (`reenter after 7d`); `reenter never` and `reenter always` take none."),
    Code("J040", "invalid journeys.toml", "journeys.toml is not valid TOML, or a field has the wrong type or an unknown name. Secrets never go in the file: name the environment variable that holds them with a `*_env` field."),
    Code("J041", "invalid scenario", "A scenario statement is incomplete: an event without `at TIME`, an `at TIME` that times nothing, an unknown suppression reason, an invalid date or offset, or a pinned prediction (`given user "u" predicted churn in 60d = 0.9`) outside 0 to 1."),
    Code("J042", "unknown journey", "A scenario expects a user in a journey that no file declares."),
    Code("J043", "unknown duration unit", "Durations use the units s, m, h, d and w. There are no months or years: their length varies."),
    Code("J044", "name without letters or digits", "Journey and split arm names become step paths (`browse_abandonment/1/discount/1`), made of their ASCII letters and digits; a name with none of them cannot make a path."),
    Code("J045", "no connector for the channel", "A `send` names no connector with `via`, and journeys.toml has "
         "no default connector for its channel: none of that channel, or several and none marked `default = true`. "
         "Declare one, mark one as the default, or write `via \"NAME\"`."),
    Code("J046", "secret not set", "`journeys check --env` found a `*_env` setting of journeys.toml whose environment "
         "variable is not set here. The daemon reads every secret from the environment; set it where the daemon runs. "
         "Without `--env` the check looks at the files only, so it gives the same answer everywhere. "
         "`journeys serve` shows it as a warning: it starts, and that connector's deliveries fail, recorded."),
    Code("J047", "delivery setting missing", """A channel the journeys send through lacks a setting of journeys.toml it
needs to deliver, or has one that is wrong: found by `journeys check --env` and by `journeys serve`,
which does not start until it is fixed. Only connectors a journey uses are checked. Emails need
`[project] public_url`, the address of the daemon where every unsubscribe link points:

    [project]
    public_url = "https://journeys.example.com"   # "http://127.0.0.1:8080" on your own machine

An SMTP connector needs its `host`, a webhook an http(s) `url`, an ad connector its account, its
token settings and an id for every audience the journeys sync to it (docs/connectors.md)."""),
    Code("J048", "secret not usable", """A secret a channel the journeys send through needs is not set in this
environment, or is set to something that cannot work: emails need JOURNEYS_UNSUBSCRIBE_SECRET (at
least 16 bytes: `python -c "import secrets; print(secrets.token_urlsafe(32))"`), which seals their
unsubscribe links, and so does each older secret JOURNEYS_UNSUBSCRIBE_PREVIOUS_SECRETS lists during a
rotation; an FCM `credentials_env` names the service account JSON or a file holding it; a
Web Push `vapid_private_key_env` holds a P-256 private key. Found by `journeys check --env` and by
`journeys serve`, which does not start until it is fixed."""),
    Code("J050", "branch can never run", """Warning. The `wait for` waits for the event that the journey's `exit when` rule also listens
for. The exit rule ends the journey first, so the `on event` branch never runs."""),
    Code("J051", "unreachable step", "Warning. A step follows an unconditional `exit` in the same block; it never runs."),
    Code("J060", "unknown journey in the order", """Warning. `[journeys] order` in journeys.toml lists journeys by name,
each once, in the order they act when several react to one event at one moment; a name that is no
journey (a journey removed since, or a typo) is ignored, and a second mention of one counts for
nothing:

    [journeys]
    order = ["Payment failure", "Checkout abandonment", "Browse abandonment"]"""),
    Code("J062", "template reads an event the send may not have", """Warning. A template prints `event` or
`current_event` where the send can run without it, and would fail to render there (the dry-run
reports such a send as failed, the daemon fails its delivery). `event` is the event that started
the run: there is none for a scheduled entry, nor for a segment entry that a profile update caused.
`current_event` is the event the step ran on: there is none after a timer (`wait`, `wait until`, a
`wait for`'s timeout) and maybe none in `on exit`. Guard the use, or read `event` instead:

    {% if current_event %}You just looked at {{ current_event.name }}.{% endif %}
    {{ event.name | default("our latest picks") }}"""),
    Code("J061", "journeys compete for a cap in file order", """Warning. Two or more journeys send through the
same policy cap, and journeys.toml does not say which of them acts first. When they send to one user
at the same moment (the same event, or timers due together), the first one takes the cap's last slot
and the other is suppressed; without a declared order the file names decide, so renaming a file
would change who gets which message. Declare the order (first acts first; journeys not listed
follow in file order):

    [journeys]
    order = ["Checkout abandonment", "Browse abandonment"]"""),
    # J070-J079: what newcomers write first, from other tools and languages; each help shows the line rewritten.
    Code("J063", "value too large", """A duration, window or number is beyond what the engine can hold: a wait,
window, timeout, goal deadline or reenter delay is at most 36500d (100 years; a window that
should reach back for ever is written without `last`), and a whole number at most 2^63 - 1 either
way (what the stores keep). Before this check, such a value passed and then failed every event
that reached it."""),
    Code("J070", "duration written in words or pieces", """A duration is one whole number and one unit, with no space: `30s`, `15m`, `2h`, `3d`, `1w`.
Words (`2 days`), a space (`1 d`), fractions (`1.5h`) and several units (`2h30m`) are not
durations: write the whole number of one unit.

    wait 2 days           # error[J070]: write `wait 2d`
    wait 2h30m            # error[J070]: write `wait 150m`
    cap email 2 per day   # error[J070]: write `cap email 2 per 1d`

There are no months or years (their length varies): write `30d` or `52w`."""),
    Code("J071", "operator from another language", """Conditions use `and`, `or`, `not` and the comparisons `==`, `!=`, `<`, `<=`, `>`, `>=`, in
lower case. The spellings of JavaScript, SQL and Python are errors:

    a && b, a || b, !a             write  a and b, a or b, not a
    category = "shoes"             write  category == "shoes"
    a === b, a <> b                write  a == b, a != b
    a AND b, NOT a                 write  a and b, not a
    coupon is null, is not null    write  coupon == null, coupon != null
    with { product = viewed.name } write  with { product: viewed.name }

`=` only gives a value: `set user.vip = true`, `segment "s" = ...`, `goal "g" = ...`."""),
    Code("J072", "text without double quotes", """The names of templates, events, segments, journeys, audiences, webhooks and connectors are text,
in straight double quotes:

    send email "welcome"
    entry when event "Product Viewed"
    journey "Welcome back" { ... }

Single quotes (`'welcome'`), typographic quotes (`“welcome”`, which word processors and chat tools
put in) and no quotes at all are errors."""),
    Code("J073", "missing comma", """The arguments of a function, the items of a list, the keys of an object and the rules of a `cap`
are separated by commas:

    count(event "Product Viewed", last 7d) >= 3
    local_weekday in ["sat", "sun"]
    send email "browse_abandon" with { product: viewed.name, category: viewed.category }
    cap email 2 per 1d, push 3 per 1d"""),
    Code("J074", "two events joined with `or`", """An event match names one event; `or` joins conditions, not events. Write one rule per event:

    exit when event "Order Completed"
    exit when event "Checkout Started"

A journey has one entry: for a second entry event, make a second journey. A goal counts one event:
add a goal per event. In a condition, call the function once per event:
`count(event "A", last 7d) + count(event "B", last 7d)`, `happened(event "A") or happened(event "B")`."""),
    Code("J075", "holdout or split written another way", """A holdout (a control group) is an arm of a `split`, and each arm is a share, a name and a block
of steps, inside the split's braces:

    split {
      90% "main" { send email "welcome" }
      10% control
    }

The control group skips the arms and carries on after the split; goals count for it too, so reports
show the uplift over it."""),
    Code("J076", "entry written another way", """An entry on an event is `entry when event "NAME"` (or `entry when first event "NAME"`), and every
event match starts with `event`:

    entry when event "Product Viewed" as viewed
    goal "purchase" = event "Order Completed" within 3d
    wait for event "Product Added" up to 1h

The other entries are `entry when user enters segment "S"`, `entry every DAY at TIME` and
`entry on cron "..."`."""),
    Code("J077", "wrong word before a duration", """Each statement that takes a duration has its own word for it:

    wait for event "Product Added" up to 1h
    goal "purchase" = event "Order Completed" within 3d
    reenter after 7d
    count(event "Product Viewed", last 7d)"""),
    Code("J078", "if or else written another way", """A condition's branches are written `if CONDITION { ... } else if CONDITION { ... } else { ... }`:
`else if` in two words (not `elif` or `elsif`), no `then` and no `:`; each branch is a block in
braces."""),
    Code("J079", "time of day written another way", """A time of day is `HH:MM` on a 24-hour clock: `10:00`, `21:30`, not `10am` or `9:30 pm`. Quiet
hours are a range written with `-`:

    quiet hours 21:00-08:00"""),
]

_CATALOGUE += [
    # J080-J089: predictions, best-time sends and learned caps (docs/language.md, "Predictions").
    Code("J080", "unknown model", """`predicted MODEL in HORIZON` names a model the engine does not train, or a
template reads `predicted.KEY` where KEY is not MODEL_HORIZON. The models are `purchase` (the
probability of a purchase within the horizon) and `churn` (the probability of no activity at all
within it):

    if predicted purchase in 30d > 0.6 { send email "picks" }
    segment "at_risk" = predicted churn in 60d >= 0.7
    {{ predicted.purchase_30d }}   # in a template"""),
    Code("J081", "prediction horizon out of range", """A prediction's horizon is a whole number of days or hours
from 1d to 3650d: `in 30d`, `in 36h`, `in 365d`. The models are trained on what users did over
such horizons in the past; a horizon of minutes says nothing a model can learn. In a template,
`predicted.purchase_30d` names the horizon in days when it is whole days."""),
    Code("J082", "best-time window out of range", """`send ... at best time within W` holds the message until
the moment within the next W at which the user is most likely to engage (the hours they opened or
clicked before, shrunk toward everyone's), then quiet hours apply as to any send. W is 1h to 7d:

    send email "weekly_picks" at best time within 24h"""),
    Code("J083", "invalid learned cap", """A learned cap (`cap push auto per 7d max 5`) lets the engine learn
each user's count within bounds the marketer sets: `max` is required, `min` is optional (1 when
left out), and 1 <= min <= max <= 1000. It learns from the engagement that follows messages, so
it counts one message channel, email, push or sms: not `all`, `ads` or `webhook` (give those a
fixed count, beside it if you like):

    cap email 2 per 1d, push auto per 7d min 2 max 5"""),
    Code("J084", "probability compared out of range", """Warning. A prediction is a probability, between 0 and 1,
and the condition compares it with a number outside that range, so it is always or never true.
For 60 %, write `0.6`:

    if predicted purchase in 30d > 0.6 { ... }   # not: > 60"""),
]

CODES: dict[str, Code] = {c.code: c for c in _CATALOGUE}


def explain(code: str) -> Code | None:
    return CODES.get(code.upper().strip())
