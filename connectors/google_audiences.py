"""Google Ads Customer Match: audience changes as OfflineUserDataJobs over the Google Ads API's REST
interface, as the Customer Match guides and the OfflineUserDataJobService reference document them.

    [connectors.google_ads]
    channel = "ads"
    type = "google_customer_match"
    customer_id = "123-456-7890"                       # the account that owns the customer lists
    login_customer_id = "111-222-3333"                 # optional: the manager account signed in as
    developer_token_env = "GOOGLE_ADS_DEVELOPER_TOKEN"
    client_id_env = "GOOGLE_ADS_CLIENT_ID"             # OAuth2 client of the refresh-token flow
    client_secret_env = "GOOGLE_ADS_CLIENT_SECRET"
    refresh_token_env = "GOOGLE_ADS_REFRESH_TOKEN"
    user_lists = { hot_browsers = "4567890123" }       # list id, or "customers/<id>/userLists/<id>"
    # api_version = "v26"
    # ad_user_data_consent = "GRANTED"                 # Consent on the job, for users in the EEA
    # ad_personalization_consent = "GRANTED"
    # batch_size = 10000                               # identifiers per addOperations request
    # oauth_url = "https://oauth2.googleapis.com/token"
    # timeout = "60s"

Each journeys audience synced here names a CRM-based (CONTACT_INFO) customer list by `user_lists`;
one without an entry fails with ConfigurationError.

The requests, per audience and direction, between two flushes:

1. `POST https://googleads.googleapis.com/{version}/customers/{customer_id}/offlineUserDataJobs:create`
   `{"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata":
   {"userList": "customers/{customer_id}/userLists/{id}", "consent": {...}}}}` -> its resourceName;
2. `POST .../{resourceName}:addOperations` `{"operations": [{"create": {"userIdentifiers":
   [{"hashedEmail": ...}, {"hashedPhoneNumber": ...}, {"addressInfo": {...}}]}}, ...],
   "enablePartialFailure": true}` (`remove` instead of `create` to remove), as many times as needed;
3. `POST .../{resourceName}:run` when `flush` is called; Google processes the job asynchronously.

Each UserIdentifier carries one identifier (the reference: "Only one identifier field ... may be set
per UserIdentifier instance"). hashedEmail and hashedPhoneNumber are SHA-256 of the normalised
values (`connectors.identifiers`: trimmed lower-case email; E.164 phone with '+'); addressInfo is
sent only when first name, last name, country and postal code are all known, names hashed,
country and postal code in clear as Google documents them. No email address or phone number is
ever sent in clear. Google takes at most 100,000 identifiers per addOperations request and advises
about 10,000: `batch_size` (default 10,000, at most 100,000) counts identifiers, and a batch that
reaches it is added to its job at once.

Every call sends the headers `developer-token`, `Authorization: Bearer <access token>` and, when
set, `login-customer-id`. The access token comes from Google's OAuth2 refresh-token grant
(`grant_type=refresh_token` with the client id and secret), kept until shortly before it expires and
fetched again once if the API answers 401.

Errors: 401 after a fresh token, 403 (e.g. DEVELOPER_TOKEN_NOT_APPROVED, USER_PERMISSION_DENIED) and a
refused token grant -> ConfigurationError; 429 / RESOURCE_EXHAUSTED (with the retryDelay Google
gives), 5xx, CONCURRENT_MODIFICATION (another job is changing the list), timeouts and connection
errors -> RetryableError; other 4xx -> PermanentError. A failing call fails every action it
carried (a failing `run` every action of its job). With partial failure enabled, an operation
Google rejects (its index in `partialFailureError`'s GoogleAdsFailure) fails alone, with
InvalidRecipient; the others go on into the job.

Erasure. The removal queued when a user is forgotten (engine.daemon.erasure) must not keep the
user's traits in the store while Google is unreachable: it carries `erasure_identifiers`, the
UserIdentifiers above (hashed; addressInfo's country and postal code as Google takes them) under
`PLATFORM`, taken from the profile before it was deleted, and `deliver` sends them as they are, the
same bytes a removal read from the profile sends. A carried identifier whose hashed field is not
SHA-256 hex is left out.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import httpx

from . import identifiers as ids
from .base import Delivery, Result, audience_profile, check_settings
from .errors import (
    ConfigurationError,
    DeliveryError,
    InvalidRecipient,
    PermanentError,
    RetryableError,
    parse_retry_after,
)
from .webhook import parse_duration

ADS_URL = "https://googleads.googleapis.com"
OAUTH_URL = "https://oauth2.googleapis.com/token"
API_VERSION = "v26"
MAX_IDENTIFIERS = 100_000     # per AddOfflineUserDataJobOperationsRequest
DEFAULT_BATCH = 10_000        # Google's advice for one request

SECRETS = {"developer_token": "developer_token_env", "client_id": "client_id_env",
           "client_secret": "client_secret_env", "refresh_token": "refresh_token_env"}
SETTINGS = {"customer_id", "login_customer_id", "user_lists", "api_version", "batch_size", "timeout",
            "ad_user_data_consent", "ad_personalization_consent", "base_url", "oauth_url", *SECRETS.values()}
PLATFORM = "google"  # the key of Google's identifiers in what an erasure removal carries
_ADDRESS = {"hashedFirstName", "hashedLastName", "countryCode", "postalCode"}

_RETRY_CODES = {"CONCURRENT_MODIFICATION", "RESOURCE_EXHAUSTED", "RESOURCE_TEMPORARILY_EXHAUSTED",
                "INTERNAL_ERROR", "TRANSIENT_ERROR", "DEADLINE_EXCEEDED"}


def user_identifiers(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A profile's UserIdentifiers, one identifier each, hashed as Customer Match documents."""
    out: list[dict[str, Any]] = []
    country = profile.get("country")
    email = ids.google_email(profile.get("email"))
    if email:
        out.append({"hashedEmail": ids.sha256_hex(email)})
    phone = ids.google_phone(profile.get("phone"), country)
    if phone:
        out.append({"hashedPhoneNumber": ids.sha256_hex(phone)})
    first, last = ids.google_name(profile.get("first_name")), ids.google_name(profile.get("last_name"))
    code, postal = ids.country_code(country), ids.postal_code(profile.get("zip"))
    if first and last and code and postal:
        out.append({"addressInfo": {"hashedFirstName": ids.sha256_hex(first),
                                    "hashedLastName": ids.sha256_hex(last),
                                    "countryCode": code, "postalCode": postal}})
    return out


def erasure_identifiers(profile: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the removal of a forgotten user carries for a connector of this type: the
    UserIdentifiers `deliver` sends for that profile, under `PLATFORM`."""
    return {PLATFORM: user_identifiers(profile)}


def _carried_identifiers(carried: Any) -> list[dict[str, Any]]:
    """The UserIdentifiers an erasure removal carries, as `user_identifiers` gives them: one
    identifier each, every hashed field a SHA-256 hex digest."""
    out: list[dict[str, Any]] = []
    for ident in carried if isinstance(carried, list) else []:
        if not isinstance(ident, Mapping) or len(ident) != 1:
            continue
        ((field_name, value),) = ident.items()
        if field_name in ("hashedEmail", "hashedPhoneNumber"):
            hashed = [value]
        elif field_name == "addressInfo" and isinstance(value, Mapping) and set(value) == _ADDRESS:
            hashed = [value["hashedFirstName"], value["hashedLastName"]]
        else:
            continue
        if all(isinstance(v, str) and ids.is_sha256_hex(v) for v in hashed):
            out.append({field_name: value})
    return out


def _digits(customer_id: Any) -> str:
    return re.sub(r"\D", "", str(customer_id or ""))


class OAuthToken:
    """An access token from Google's OAuth2 refresh-token grant, cached until shortly before expiry."""

    def __init__(self, client: httpx.Client, url: str, client_id: str, client_secret: str, refresh_token: str,
                 clock: Callable[[], float] = time.time):
        self._client, self._url, self._clock = client, url, clock
        self._form = {"grant_type": "refresh_token", "client_id": client_id,
                      "client_secret": client_secret, "refresh_token": refresh_token}
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh or self._token is None or self._clock() >= self._expires - 60:
                self._token, self._expires = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        try:
            response = self._client.post(self._url, data=self._form, headers={"Accept": "application/json"})
        except httpx.TimeoutException as e:
            raise RetryableError(f"Google's token endpoint did not answer in time: {e}") from e
        except httpx.HTTPError as e:
            raise RetryableError(f"could not reach Google's token endpoint: {e}") from e
        text = response.text[:2000]
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError("Google's token endpoint failed", status=response.status_code, answer=text,
                                 retry_after=parse_retry_after(response.headers.get("Retry-After")))
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400 or not answer.get("access_token"):
            reason = answer.get("error_description") or answer.get("error") or "no access token"
            raise ConfigurationError(f"Google refused the OAuth refresh token: {reason}",
                                     status=response.status_code, answer=text)
        return answer["access_token"], self._clock() + float(answer.get("expires_in") or 3600)


@dataclass
class _Job:
    """The job of one user list and direction until the next flush."""
    resource: str | None = None
    added: list[str] = field(default_factory=list)             # action ids now in the job
    pending: list[tuple[str, dict]] = field(default_factory=list)
    identifiers: int = 0                                        # in `pending`


class GoogleCustomerMatch:
    channel = "ads"

    def __init__(self, name: str, *, customer_id: str, developer_token: str | None, client_id: str | None,
                 client_secret: str | None, refresh_token: str | None, user_lists: Mapping[str, str],
                 login_customer_id: str | None = None, api_version: str = API_VERSION,
                 base_url: str = ADS_URL, oauth_url: str = OAUTH_URL, batch_size: int = DEFAULT_BATCH,
                 ad_user_data_consent: str | None = None, ad_personalization_consent: str | None = None,
                 timeout: float = 60.0, missing: list[str] | None = None,
                 clock: Callable[[], float] = time.time):
        self.name = name
        self.customer_id = _digits(customer_id)
        self.login_customer_id = _digits(login_customer_id) or None
        self.user_lists = dict(user_lists)
        self.api_version = api_version
        self.base_url = base_url.rstrip("/")
        if not 1 <= batch_size <= MAX_IDENTIFIERS:
            raise ConfigurationError(f"{name}: batch_size must be 1..{MAX_IDENTIFIERS} identifiers (Google's limit per request)")
        self.batch_size = batch_size
        self._developer_token = developer_token
        self._missing = list(missing or [])
        for attr, value in (("developer_token", developer_token), ("client_id", client_id),
                            ("client_secret", client_secret), ("refresh_token", refresh_token)):
            if not value and not any(attr in m for m in self._missing):
                self._missing.append(f"{attr} is not set")
        if not self.customer_id:
            self._missing.append("customer_id is not set")
        self._consent = {k: v for k, v in (("adUserData", ad_user_data_consent),
                                           ("adPersonalization", ad_personalization_consent)) if v}
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=10, max_keepalive_connections=5))
        self._oauth = OAuthToken(self._client, oauth_url, client_id or "", client_secret or "",
                                 refresh_token or "", clock)
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._done: list[tuple[str, Result | Exception]] = []

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], env: Mapping[str, str] | None = None,
                      **overrides: Any) -> "GoogleCustomerMatch":
        """From a `[connectors.NAME]` table's settings (`ConnectorConfig.settings`)."""
        env = os.environ if env is None else env
        check_settings(name, "google_customer_match", settings, SETTINGS)
        values: dict[str, Any] = {}
        missing: list[str] = []
        for attr, key in SECRETS.items():
            var = settings.get(key)
            values[attr] = env.get(var) if var else None
            if not values[attr]:
                missing.append(f"the environment variable {var} ({key}) is not set" if var else f"{key} is not set")
        kwargs: dict[str, Any] = dict(
            values, missing=missing, customer_id=settings.get("customer_id", ""),
            login_customer_id=settings.get("login_customer_id"), user_lists=settings.get("user_lists") or {},
            api_version=settings.get("api_version", API_VERSION),
            batch_size=int(settings.get("batch_size", DEFAULT_BATCH)),
            ad_user_data_consent=settings.get("ad_user_data_consent"),
            ad_personalization_consent=settings.get("ad_personalization_consent"),
        )
        for key in ("base_url", "oauth_url"):
            if key in settings:
                kwargs[key] = settings[key]
        if "timeout" in settings:
            kwargs["timeout"] = parse_duration(settings["timeout"])
        kwargs.update(overrides)
        return cls(name, **kwargs)

    # ------------------------------------------------------------------ protocol

    def deliver(self, delivery: Delivery) -> Result:
        if delivery.kind not in ("audience_add", "audience_remove"):
            raise PermanentError(f"{self.name} syncs audiences; it cannot deliver a {delivery.kind}")
        if self._missing:
            raise ConfigurationError(f"{self.name}: " + "; ".join(self._missing))
        user_list = self._user_list(delivery.target)
        carried = ids.prehashed(delivery.data, PLATFORM)
        identifiers = (user_identifiers(audience_profile(delivery)) if carried is None
                       else _carried_identifiers(carried))
        if not identifiers:
            raise InvalidRecipient("the profile has no email, phone or full address Customer Match can match on")
        op = "create" if delivery.kind == "audience_add" else "remove"
        with self._lock:
            job = self._jobs.setdefault((user_list, op), _Job())
            job.pending.append((delivery.action_id, {op: {"userIdentifiers": identifiers}}))
            job.identifiers += len(identifiers)
            if job.identifiers >= self.batch_size:
                self._add(user_list, job)
        return Result(queued=True, detail=f"queued for {user_list} ({op})")

    def flush(self) -> list[tuple[str, Result | Exception]]:
        with self._lock:
            jobs, self._jobs = self._jobs, {}
            for user_list, job in ((k[0], j) for k, j in jobs.items()):
                self._add(user_list, job)
                if job.resource and job.added:
                    self._run(job)
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ the three calls

    def _user_list(self, audience: str) -> str:
        value = self.user_lists.get(audience)
        if not value:
            raise ConfigurationError(
                f"{self.name}: no Customer Match list for audience {audience!r}; add it to "
                f"[connectors.{self.name}] user_lists = {{ {audience} = \"<user list id>\" }}")
        value = str(value)
        return value if value.startswith("customers/") else f"customers/{self.customer_id}/userLists/{_digits(value)}"

    def _add(self, user_list: str, job: _Job) -> None:
        """Send the pending operations into the job (creating it first)."""
        pending, job.pending, job.identifiers = job.pending, [], 0
        if not pending:
            return
        try:
            if job.resource is None:
                metadata: dict[str, Any] = {"userList": user_list}
                if self._consent:
                    metadata["consent"] = dict(self._consent)
                answer = self._call(f"customers/{self.customer_id}/offlineUserDataJobs:create",
                                    {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                                             "customerMatchUserListMetadata": metadata}})
                job.resource = answer.get("resourceName")
                if not job.resource:
                    raise PermanentError("Google created no job (no resourceName)", answer=json.dumps(answer)[:2000])
            answer = self._call(f"{job.resource}:addOperations",
                                {"operations": [operation for _, operation in pending],
                                 "enablePartialFailure": True})
        except DeliveryError as e:
            self._done.extend((action_id, e) for action_id, _ in pending)
            return
        failed = _failed_operations(answer)
        for index, (action_id, _) in enumerate(pending):
            if index in failed:
                self._done.append((action_id, InvalidRecipient(f"Google rejected this user's identifiers: {failed[index]}",
                                                               status=200, answer=json.dumps(answer)[:2000])))
            else:
                job.added.append(action_id)

    def _run(self, job: _Job) -> None:
        try:
            answer = self._call(f"{job.resource}:run", {})
        except DeliveryError as e:
            self._done.extend((action_id, e) for action_id in job.added)
            return
        detail = f"in Customer Match job {job.resource}, running as {answer.get('name', '?')}"
        self._done.extend((action_id, Result(provider_id=job.resource, detail=detail)) for action_id in job.added)

    def _call(self, path: str, body: dict) -> dict:
        url = f"{self.base_url}/{self.api_version}/{path}"
        for attempt in (1, 2):
            headers = {"developer-token": self._developer_token or "", "Content-Type": "application/json",
                       "Authorization": f"Bearer {self._oauth.get(fresh=attempt == 2)}"}
            if self.login_customer_id:
                headers["login-customer-id"] = self.login_customer_id
            try:
                response = self._client.post(url, content=json.dumps(body, separators=(",", ":")), headers=headers)
            except httpx.TimeoutException as e:
                raise RetryableError(f"Google Ads did not answer in time: {e}") from e
            except httpx.HTTPError as e:
                raise RetryableError(f"could not reach Google Ads: {e}") from e
            if response.status_code == 401 and attempt == 1:
                continue  # the cached access token may have been revoked: fetch a new one once
            break
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400 or not isinstance(answer, dict):
            raise ads_error(response, answer)
        return answer


def _failed_operations(answer: Mapping[str, Any]) -> dict[int, str]:
    """Operation index -> why, from an addOperations answer's partialFailureError."""
    failure = answer.get("partialFailureError") or {}
    out: dict[int, str] = {}
    for detail in failure.get("details") or []:
        for error in detail.get("errors") or []:
            for element in (error.get("location") or {}).get("fieldPathElements") or []:
                if element.get("fieldName") == "operations" and "index" in element:
                    code = "/".join(f"{k}={v}" for k, v in (error.get("errorCode") or {}).items())
                    out[int(element["index"])] = f"{code} {error.get('message', '')}".strip()
                    break
    return out  # a failure Google did not place on an operation blames none


def _error_codes(err: Mapping[str, Any]) -> list[str]:
    codes = []
    for detail in err.get("details") or []:
        for error in detail.get("errors") or []:
            codes.extend(str(v) for v in (error.get("errorCode") or {}).values())
    return codes


def _retry_delay(err: Mapping[str, Any]) -> float | None:
    """Seconds from a RetryInfo detail or a quota error's retryDelay ("30s")."""
    for detail in err.get("details") or []:
        candidates = [detail.get("retryDelay")]
        for error in detail.get("errors") or []:
            candidates.append(((error.get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay"))
        for value in candidates:
            if isinstance(value, str) and value.endswith("s"):
                try:
                    return float(value[:-1])
                except ValueError:
                    pass
    return None


def ads_error(response: httpx.Response, answer: Any) -> DeliveryError:
    """The error a Google Ads API answer means: its status and GoogleAdsFailure codes."""
    status = response.status_code
    text = response.text[:2000]
    err = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), dict) else {}
    codes = _error_codes(err)
    wait = parse_retry_after(response.headers.get("Retry-After")) or _retry_delay(err)
    message = f"Google Ads {err.get('status') or status}: {err.get('message') or 'no message'}"
    if codes:
        message += f" ({', '.join(codes)})"
    if status == 401 or status == 403:
        return ConfigurationError(message, status=status, answer=text)
    if status in (408, 429) or status >= 500 or err.get("status") in ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL") \
            or any(c in _RETRY_CODES for c in codes):
        return RetryableError(message, status=status, answer=text, retry_after=wait)
    return PermanentError(message, status=status, answer=text)
